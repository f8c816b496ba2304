import pytest

from costplan.errors import CostplanError
from costplan.hardware import gpu, price
from costplan.tables import read_table
from costplan.units import GIB, fmt_bytes, fmt_duration, parse_count, parse_duration_seconds


@pytest.mark.parametrize("text,value", [("100M", 1e8), ("2.5B", 2.5e9), ("1e9", 1e9), ("50k", 5e4),
                                        ("3T", 3e12), (" 7 ", 7.0), ("1.5g", 1.5e9)])
def test_parse_count(text, value):
    assert parse_count(text) == value


@pytest.mark.parametrize("text", ["", "abc", "1MB", "1..2", "inf"])
def test_parse_count_rejects(text):
    with pytest.raises(ValueError):
        parse_count(text)


def test_durations_and_formats():
    assert parse_duration_seconds("48h") == 48 * 3600
    assert parse_duration_seconds("90m") == 5400
    assert parse_duration_seconds("2d") == 172800
    assert fmt_bytes(80 * GIB) == "80 GiB"
    assert fmt_duration(5400) == "90 min"


@pytest.mark.parametrize("table", ["gpus", "prices", "models", "efficiency"])
def test_every_reference_row_has_source_and_date(table):
    rows = read_table(table)
    assert rows
    for row in rows:
        assert row["source"] and len(row["as_of"]) == 10 and row["as_of"][4] == "-"


def test_gpu_table_numbers_against_datasheets():
    h100 = gpu("h100")  # NVIDIA H100 SXM datasheet: 80 GB, 3.35 TB/s, 989 dense bf16 TFLOPS
    assert h100.key == "h100-sxm" and h100.memory_bytes == 80 * GIB
    assert h100.peak("bf16") == pytest.approx(989.5e12)
    assert h100.bandwidth_bytes_per_s == pytest.approx(3.35e12)
    assert gpu("a100").peak("bf16") == pytest.approx(312e12)  # A100 datasheet, dense
    with pytest.raises(CostplanError, match="no bf16"):
        gpu("t4").peak("bf16")


def test_every_price_names_a_known_gpu_and_the_cheapest_is_chosen():
    keys = {row["key"] for row in read_table("gpus")}
    rows = read_table("prices")
    assert {row["gpu"] for row in rows} <= keys
    assert len({row["provider"] for row in rows}) >= 5
    h100 = [float(r["usd_per_gpu_hour"]) for r in rows if r["gpu"] == "h100-sxm" and r["usd_per_gpu_hour"]]
    assert price("h100-sxm").usd_per_gpu_hour == min(h100)
    assert price("h100-sxm", override=1.5).usd_per_gpu_hour == 1.5


def test_new_gpu_rows_and_the_v100_alias():
    """Rows added from the 2026-11 hardware research (datasheet figures, dense peaks)."""
    assert gpu("v100").key == "v100-32gb" and gpu("v100").memory_bytes == 32 * GIB
    assert gpu("v100-16gb").memory_bytes == 16 * GIB
    assert gpu("b200").peak("bf16") == pytest.approx(2250e12)  # HGX B200, dense (4.5 PF with sparsity / 2)
    assert gpu("b200").arch == "blackwell" and gpu("mi250x").arch == "cdna2"
    assert gpu("h100-nvl").memory_bytes == 94 * GIB
    assert gpu("rtx-2080ti").peak("fp16") == pytest.approx(53.8e12)
    for row in read_table("gpus"):  # every card has a dense fp16 peak
        assert float(row["fp16_tflops"]) > 0, row["key"]


def test_every_gpu_has_its_interconnect_and_v100_offers_sit_under_their_memory_size():
    from costplan.scaling import link

    keys = [row["key"] for row in read_table("gpus")]
    listed = {row["gpu"] for row in read_table("interconnect")}
    assert set(keys) <= listed
    for row in read_table("interconnect"):
        assert row["source"] and len(row["as_of"]) == 10
    assert link("b200").intra_bytes_per_s == pytest.approx(900e9)
    assert link("b200").node_bytes_per_s == pytest.approx(8 * 400e9 / 8)  # 8 NICs x 400 Gb/s
    assert link("rtx-5090").intra_bytes_per_s == pytest.approx(63e9 / 2)  # no peer-to-peer: via host memory
    prices = read_table("prices")
    assert {r["gpu"] for r in prices if r["instance"] == "p3.2xlarge"} == {"v100-16gb"}  # AWS p3: V100 16 GB
    assert {r["gpu"] for r in prices if r["instance"] == "p3dn.24xlarge"} == {"v100-32gb"}


def test_padding_option_choices_are_the_dataset_modes():
    from costplan.cli import PADDING_CHOICE
    from costplan.dataset import PADDINGS

    assert tuple(PADDING_CHOICE.choices) == PADDINGS


def test_weights_option_choices_are_the_weight_formats():
    from costplan.cli import WEIGHTS_CHOICE
    from costplan.memory import WEIGHT_FORMATS

    assert tuple(WEIGHTS_CHOICE.choices) == WEIGHT_FORMATS


def test_frameworks_table_matches_the_option_choices_and_is_sourced():
    from costplan.cli import FRAMEWORK_CHOICE
    from costplan.frameworks import FRAMEWORK_KEYS, frameworks

    stacks = frameworks()
    assert tuple(stacks) == FRAMEWORK_KEYS == tuple(FRAMEWORK_CHOICE.choices)
    assert all(s.source for s in stacks.values())
    assert stacks["torchtune"].bf16 == "bf16-true" and stacks["hf-trainer"].bf16 == "bf16-mixed"
    assert stacks["megatron"].tensor_parallel and not stacks["hf-trainer"].tensor_parallel
