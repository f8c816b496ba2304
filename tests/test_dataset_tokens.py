"""costplan tokens and --dataset: tiny tokenizers trained here, small JSONL, Parquet and text files."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from costplan.cli import cli
from costplan.dataset import BYTES_PER_TOKEN, count_tokens

TEXTS = ["the cat sat on the mat", "a dog ran", "the cat and the dog sat on a mat and ran and sat",
         "on the mat"]


def word_tokenizer(folder):
    """A WordLevel tokenizer trained on TEXTS: one token per word, so counts are checkable by eye."""
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import models, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(TEXTS, trainers.WordLevelTrainer(special_tokens=["[UNK]"]))
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    return folder


def bpe_tokenizer(folder):
    """A byte-level BPE with a BOS token added to every sequence, as Llama-style tokenizers do."""
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import decoders, models, pre_tokenizers, processors, trainers

    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TEXTS * 5, trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>"],
                                                           initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    return tok


def words(text):
    return len(text.split())


@pytest.fixture
def data(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "a.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in TEXTS[:2]) + "\n")
    chat = {"messages": [{"role": "user", "content": TEXTS[2]}, {"role": "assistant", "content": TEXTS[3]}]}
    (folder / "b.jsonl").write_text(json.dumps(chat) + "\n\n")
    (folder / "c.txt").write_text(TEXTS[0] + "\n\n" + TEXTS[1] + "\n")
    (folder / "notes.csv").write_text("ignored,because,not,a,dataset\n")
    return folder


def test_word_tokenizer_counts_every_format_in_a_folder(tmp_path, data):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": TEXTS, "id": [1, 2, 3, 4]}), data / "d.parquet")
    tokenizer = word_tokenizer(tmp_path / "tok")
    count = count_tokens(data, seq_len=8, tokenizer=str(tokenizer))
    by_file = {f.path.rsplit("/", 1)[-1]: f for f in count.files}
    assert set(by_file) == {"a.jsonl", "b.jsonl", "c.txt", "d.parquet"}
    assert by_file["a.jsonl"].tokens == words(TEXTS[0]) + words(TEXTS[1])
    assert by_file["b.jsonl"].sequences == 1 and by_file["b.jsonl"].tokens == words(TEXTS[2]) + words(TEXTS[3])
    assert by_file["c.txt"].sequences == 2  # one sequence per non-empty line
    assert by_file["d.parquet"].tokens == sum(map(words, TEXTS))
    assert count.exact and count.error == 0
    lengths = [6, 3, 16, 6, 3, *map(words, TEXTS)]
    assert sorted(count.lengths) == sorted(lengths)
    # Padding: 9 rows of 8; truncation keeps min(n, 8). Packing: ceil(total / 8) rows.
    kept = sum(min(n, 8) for n in lengths)
    assert count.padded_positions == 9 * 8 and count.kept_when_padded == kept
    assert count.padding_waste == pytest.approx(1 - kept / 72)
    assert count.packed_rows == -(-sum(lengths) // 8)
    assert count.truncated == 2  # the 16-word chat and the 16-word text
    assert count.at(32).truncated == 0 and count.at(32).tokens == count.tokens


def test_special_tokens_are_counted(tmp_path):
    tok = bpe_tokenizer(tmp_path / "bpe")
    file = tmp_path / "x.jsonl"
    file.write_text("\n".join(json.dumps({"text": t}) for t in TEXTS))
    count = count_tokens(file, tokenizer=str(tmp_path / "bpe"))
    assert count.tokens == sum(len(tok.encode(t).ids) for t in TEXTS)
    assert all(tok.encode(t).ids[0] == 0 for t in TEXTS)  # BOS on every sequence


def test_without_a_tokenizer_it_estimates_and_says_so(data):
    count = count_tokens(data / "a.jsonl", seq_len=4)
    assert not count.exact and count.error > 0
    assert count.tokens == sum(round(len(t.encode()) / BYTES_PER_TOKEN) for t in TEXTS[:2])
    assert "bytes per token" in count.counted_with


def test_tokens_command_table_json_and_csv(tmp_path, data):
    tokenizer = word_tokenizer(tmp_path / "tok")
    runner = CliRunner()
    table = runner.invoke(cli, ["tokens", str(data), "--tokenizer", str(tokenizer), "--seq-len", "8"])
    assert table.exit_code == 0, table.output
    assert "padding" in table.output and "packed" in table.output
    result = runner.invoke(cli, ["tokens", str(data), "--tokenizer", str(tokenizer), "--json"])
    data_json = json.loads(result.output)
    assert data_json["tokens"] == 6 + 3 + 16 + 6 + 3 and data_json["exact"] is True
    assert len(data_json["files"]) == 3
    # Lengths 6, 3, 16, 6, 3. Grouped with a sampler batch (2 x 8) over the dataset: one sorted megabatch,
    # 16,6 | 6,3 | 3 at micro-batch 2; at random, 5 x E[max of 2] = 5 x (3 x .16 + 6 x .48 + 16 x .36).
    grouped = json.loads(runner.invoke(cli, ["tokens", str(data), "--tokenizer", str(tokenizer), "--json",
                                             "--grad-accum", "8"]).output)["micro_batch_padding"]
    assert [at["micro_batch"] for at in grouped] == [1, 2, 4]
    assert [at["grouped_positions"] for at in grouped] == [34, 2 * 16 + 2 * 6 + 3, 4 * 16 + 3]
    assert grouped[0]["longest_padding"] == 0 and grouped[1]["longest_positions"] == pytest.approx(45.6)
    assert grouped[2]["grouped_padding"] == pytest.approx(1 - 34 / 67)
    assert "grouped: positions" in table.output
    csv_out = runner.invoke(cli, ["tokens", str(data), "--tokenizer", str(tokenizer), "--csv"])
    assert csv_out.output.splitlines()[0].startswith("path,format,sequences,tokens")
    assert "(total)" in csv_out.output


def test_model_folder_and_hub_cache_tokenizers(tmp_path, data, monkeypatch):
    from tests.test_hub import LLAMA_31_8B, fake_cache

    folder = word_tokenizer(tmp_path / "model")
    (folder / "config.json").write_text(json.dumps(LLAMA_31_8B))
    assert count_tokens(data / "a.jsonl", model=str(folder)).exact
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    snapshot = fake_cache(tmp_path / "hub", "org/model", {"config.json": LLAMA_31_8B})
    (snapshot / "tokenizer.json").write_text((folder / "tokenizer.json").read_text())
    count = count_tokens(data / "a.jsonl", model="org/model")
    assert count.exact and "local Hugging Face cache" in count.counted_with
    missing = count_tokens(data / "a.jsonl", model="org/other")  # not cached: the estimate, with the reason
    assert not missing.exact and "org/other has no tokenizer.json" in missing.counted_with


def test_dataset_gives_estimate_compare_and_plan_their_tokens(tmp_path, data):
    tokenizer = str(word_tokenizer(tmp_path / "tok"))
    runner = CliRunner()
    est = json.loads(runner.invoke(cli, ["estimate", "-m", "gpt2", "--dataset", str(data), "--tokenizer",
                                         tokenizer, "--json"]).output)
    assert est["tokens"] == 34.0
    assert any(a.startswith("dataset: 34 tokens") for a in est["assumptions"])
    rows = json.loads(runner.invoke(cli, ["compare", "-m", "gpt2", "--dataset", str(data), "--tokenizer", tokenizer,
                                          "--json"]).output)["rows"]
    assert {r["tokens"] for r in rows if r["method"] in ("lora", "full")} == {34.0}
    plan = runner.invoke(cli, ["plan", "-m", "gpt2", "--dataset", str(data), "--tokenizer", tokenizer, "--gpu", "l4",
                               "--json"])
    assert plan.exit_code == 0, plan.output
    assert any("dataset: 34 tokens" in n for n in json.loads(plan.output)["notes"])


@pytest.mark.parametrize("args,message", [
    (["tokens", "/nonexistent/data"], "No dataset at"),
    (["tokens", "{csv}"], "is not a dataset format"),
    (["tokens", "{bad}"], "line 2 is not a JSON record"),
    (["tokens", "{empty}"], "holds no text to count"),
    (["tokens", "{good}", "--tokenizer", "/nonexistent/tok"], "cannot count with tokenizer"),
    (["tokens", "{good}", "--tokenizer", "{notjson}"], "not a readable tokenizer.json"),
    (["estimate", "-m", "gpt2", "--dataset", "{good}", "--tokens", "1M"], "give --tokens or --dataset"),
    (["plan", "-m", "gpt2"], "give --tokens or --dataset"),
    (["tokens", "{parquet}"], "not a readable Parquet file"),
])
def test_bad_datasets_are_one_line(tmp_path, args, message):
    files = {"csv": tmp_path / "x.csv", "bad": tmp_path / "bad.jsonl", "empty": tmp_path / "empty.txt",
             "good": tmp_path / "good.jsonl", "notjson": tmp_path / "tokenizer.json",
             "parquet": tmp_path / "broken.parquet"}
    files["csv"].write_text("a,b\n")
    files["bad"].write_text('{"text": "ok"}\n{not json}\n')
    files["empty"].write_text("\n\n")
    files["good"].write_text('{"text": "hello world"}\n')
    files["notjson"].write_text("{}")
    files["parquet"].write_bytes(b"PAR1 not really")
    result = CliRunner().invoke(cli, [a.format(**files) for a in args])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and message in lines[0], result.output


def test_estimate_without_dataset_never_imports_tokenizers_pyarrow_or_pandas():
    runs = [["estimate", "-m", "7b", "--json"], ["estimate", "-m", "7b", "--csv"],
            ["estimate", "-m", "tinyllama", "--adapter", "tests/fixtures/adapters/tinyllama_lora", "--json"],
            ["estimate", "-m", "8b", "--from", "tests/fixtures/configs/axolotl_llama3_qlora.yml", "--json"]]
    heavy = ("tokenizers", "pyarrow", "pandas", "numpy", "torch")
    code = (
        "import sys, json\n"
        "from click.testing import CliRunner\n"
        "from costplan.cli import cli\n"
        f"for args in {runs!r}:\n"
        "    r = CliRunner().invoke(cli, args)\n"
        "    assert r.exit_code == 0, r.output\n"
        f"print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))\n"
    )
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_progress_reports_every_byte_on_disk(data):
    seen = []
    count_tokens(data, progress=seen.append)
    assert sum(seen) == sum(p.stat().st_size for p in data.iterdir() if p.suffix in (".jsonl", ".txt"))


def test_long_counts_show_a_progress_bar_on_stderr(tmp_path, monkeypatch):
    import costplan.dataset as ds

    big = tmp_path / "big.txt"
    big.write_text("the cat sat on the mat\n" * 1000)
    monkeypatch.setattr(ds, "total_bytes", lambda path: 64 << 20)  # pretend it is long
    result = CliRunner().invoke(cli, ["tokens", str(big), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["sequences"] == 1000  # data on stdout, the bar (if any) on stderr


def _counted(lengths, seq_len):
    """A TokenCount of sequences of these lengths (no files read)."""
    from array import array

    from costplan.dataset import FileCount, TokenCount

    files = (FileCount("x.jsonl", "jsonl", len(lengths), sum(lengths), 4 * sum(lengths)),)
    return TokenCount(files, seq_len, "given", True, array("I", lengths))


def test_a_micro_batch_pads_to_its_expected_longest_sequence():
    # Two draws from {1, 2, 3, 4}: P(max = v) = (v^2 - (v-1)^2) / 16, so E = (1 + 6 + 15 + 28) / 16.
    assert _counted([1, 2, 3, 4], 4096).expected_longest(2) == pytest.approx(50 / 16)
    # Truncated to 3: the lengths are {1, 2, 3, 3}: E = (1 + 2 * 3 + 3 * 12) / 16.
    assert _counted([1, 2, 3, 4], 3).expected_longest(2) == pytest.approx(43 / 16)
    assert _counted([1, 2, 3, 4], 4096).expected_longest(1) == pytest.approx(2.5)  # one draw: the mean
    import random

    rng = random.Random(0)
    lengths = [int(rng.lognormvariate(5, 0.8)) + 1 for _ in range(500)]
    draws = [max(min(n, 512) for n in rng.choices(lengths, k=8)) for _ in range(40_000)]
    assert _counted(lengths, 512).expected_longest(8) == pytest.approx(sum(draws) / len(draws), rel=0.01)


def test_padded_rows_cost_steps_and_size_memory_on_the_longest_sequence():
    import costplan
    from costplan.dataset import Rows

    lengths = [100] * 300 + [300] * 100 + [900]
    count = _counted(lengths, 2048)
    rows = Rows(count, "longest")
    assert rows.row_len == 900
    assert rows.positions(1) == pytest.approx(sum(lengths))  # one sequence a micro-batch: no padding
    assert Rows(count, "max").positions(4) == 401 * 2048
    assert Rows(count, "packed").positions(4) == sum(lengths)
    base = dict(gpu="a100", gpus=1, micro_batch=4, grad_ckpt=True)
    padded = costplan.estimate("8b", "lora", dataset=count, **base)  # fine-tuning: padded to the longest
    same = costplan.estimate("8b", "lora", tokens=rows.positions(4), seq_len=900, **base)
    assert padded.wall_seconds == same.wall_seconds and padded.tokens == sum(lengths)
    assert padded.memory.device_bytes == same.memory.device_bytes
    packed = costplan.estimate("8b", "lora", dataset=count, padding="packed", **base)
    assert packed.wall_seconds == costplan.estimate("8b", "lora", tokens=sum(lengths), seq_len=2048,
                                                    **base).wall_seconds
    assert packed.wall_seconds < padded.wall_seconds < costplan.estimate("8b", "lora", dataset=count,
                                                                          padding="max", **base).wall_seconds
    assert any("padded to its longest sequence" in a for a in padded.assumptions)


def test_plan_pads_each_layout_at_its_micro_batch_as_estimate_does():
    import costplan
    from costplan.plan import search
    from tests.test_planning import STARTUP_SECONDS

    count = _counted([100] * 300 + [300] * 100 + [900], 2048)
    result = search("8b", ("lora",), dataset=count, gpus=("a100-80gb",), max_gpus=8)
    assert any("padded to its longest" in n for n in result.notes)
    for c in result.pareto:
        est = costplan.estimate("8b", c.method, dataset=count, gpu=c.gpu, gpus=c.gpus, zero=c.zero,
                                micro_batch=c.micro_batch, grad_ckpt=c.grad_ckpt, precision=c.precision,
                                framework=c.framework, provider=c.provider, startup_seconds=STARTUP_SECONDS)
        assert est.wall_seconds == pytest.approx(c.wall_seconds, rel=1e-12)
        assert est.memory.device_bytes == pytest.approx(c.device_bytes, rel=1e-12)


def test_grouped_micro_batches_are_cut_from_length_sorted_megabatches():
    from costplan.dataset import Rows

    rows = Rows(_counted([1, 2, 3, 4, 5, 6, 7, 8], 4096), "grouped")
    assert rows.row_len == 8
    # Sampler batch 2 x 4 = 8 >= the dataset: one megabatch, sorted 8,7 | 6,5 | 4,3 | 2,1, whatever the shuffle.
    assert rows.positions(2, 4) == 2 * (8 + 6 + 4 + 2)
    assert rows.positions(1, 8) == 36  # one sequence a micro-batch: no padding
    assert rows.positions(8, 1) == 8 * 8  # the whole dataset in one micro-batch
    assert Rows(_counted([5] * 40, 4096), "grouped").positions(4, 2) == 200  # equal lengths: no padding
    assert Rows(_counted([1, 2, 3, 9], 3), "grouped").positions(4, 1) == 4 * 3  # truncated to seq_len


@pytest.mark.needs_torch
def test_grouped_padding_matches_the_trainers_length_grouped_sampler():
    """The positions the Trainer computes: transformers' own ``get_length_grouped_indices`` cut into
    micro-batches, averaged over 40 shuffles, against costplan's simulation of it."""
    import random

    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers.trainer_pt_utils import get_length_grouped_indices

    from costplan.dataset import Rows

    rng = random.Random(1)
    lengths = [int(rng.lognormvariate(5, 1)) + 1 for _ in range(3_001)]  # not a multiple of any batch
    seq_len = 1024
    kept = [min(n, seq_len) for n in lengths]
    rows = Rows(_counted(lengths, seq_len), "grouped")
    for micro_batch, accum in ((4, 2), (8, 1), (2, 8)):
        totals = []
        for seed in range(40):
            order = get_length_grouped_indices(kept, micro_batch * accum, generator=torch.Generator().manual_seed(seed))
            totals.append(sum(len(order[i:i + micro_batch]) * max(kept[j] for j in order[i:i + micro_batch])
                              for i in range(0, len(order), micro_batch)))
        assert rows.positions(micro_batch, accum) == pytest.approx(sum(totals) / len(totals), rel=0.005)
        assert sum(kept) < rows.positions(micro_batch, accum) < Rows(rows.count, "longest").positions(micro_batch)


def test_estimate_and_plan_pad_grouped_rows_at_the_chosen_accumulation():
    import costplan
    from costplan.dataset import Rows
    from costplan.plan import search
    from tests.test_planning import STARTUP_SECONDS

    count = _counted([100] * 300 + [300] * 100 + [900], 2048)
    rows = Rows(count, "grouped")
    base = dict(gpu="a100", gpus=1, micro_batch=2, global_batch=16, grad_ckpt=True)
    grouped = costplan.estimate("8b", "lora", dataset=count, padding="grouped", **base)
    assert grouped.placement.layout.grad_accum == 8
    same = costplan.estimate("8b", "lora", tokens=rows.positions(2, 8), seq_len=900, **base)
    assert grouped.wall_seconds == same.wall_seconds
    assert any("length-sorted megabatches of 96 sequences" in a for a in grouped.assumptions)  # 6 x 16: 401 // 64
    assert grouped.wall_seconds < costplan.estimate("8b", "lora", dataset=count, **base).wall_seconds  # longest
    result = search("8b", ("lora",), dataset=count, padding="grouped", gpus=("a100-80gb",), max_gpus=8)
    assert any("grouped by length" in n or "length-grouped" in n for n in result.notes)
    for c in result.pareto:
        est = costplan.estimate("8b", c.method, dataset=count, padding="grouped", gpu=c.gpu, gpus=c.gpus, zero=c.zero,
                                micro_batch=c.micro_batch, grad_ckpt=c.grad_ckpt, precision=c.precision,
                                framework=c.framework, provider=c.provider, startup_seconds=STARTUP_SECONDS)
        assert est.wall_seconds == pytest.approx(c.wall_seconds, rel=1e-12)


def test_padding_without_a_dataset_is_one_line():
    result = CliRunner().invoke(cli, ["estimate", "-m", "7b", "--padding", "max"])
    assert result.exit_code == 2 and result.output.startswith("Error:") and "--dataset" in result.output


def test_a_training_config_says_whether_its_rows_are_packed(tmp_path, data):
    tokenizer = str(word_tokenizer(tmp_path / "tok"))
    runner = CliRunner()

    def rows_line(config, *extra):
        path = config if config.startswith("/") else f"tests/fixtures/configs/{config}"
        result = runner.invoke(cli, ["estimate", "-m", "8b", "--from", path,
                                     "--dataset", str(data), "--tokenizer", tokenizer, "--json", *extra])
        assert result.exit_code == 0, result.output
        return next(a for a in json.loads(result.output)["assumptions"] if a.startswith("rows:"))

    assert "packed" in rows_line("axolotl_llama3_qlora.yml")  # sample_packing: true
    assert "padded to its longest" in rows_line("axolotl_llama3_qlora_fsdp_70b.yaml")  # sample_packing: false
    assert "padded to its longest" in rows_line("torchtune_llama3_1_8B_lora_single_device.yaml")
    assert "(--padding max)" in rows_line("axolotl_llama3_qlora.yml", "--padding", "max")  # the flag wins
    grouping = tmp_path / "axolotl_grouped.yaml"  # sample_packing false, group_by_length true
    grouping.write_text(open("tests/fixtures/configs/axolotl_llama3_qlora_fsdp_70b.yaml").read()
                        + "\ngroup_by_length: true\n")
    assert "(--padding grouped" in rows_line(str(grouping.resolve()))
    arguments = json.loads(open("tests/fixtures/configs/transformers_training_args.json").read())
    trainer = tmp_path / "training_args.json"
    trainer.write_text(json.dumps({**arguments, "train_sampling_strategy": "group_by_length"}))
    assert "(--padding grouped" in rows_line(str(trainer.resolve()))
    without = runner.invoke(cli, ["estimate", "-m", "8b", "--from", "tests/fixtures/configs/axolotl_llama3_qlora.yml"])
    assert without.exit_code == 0, without.output  # no dataset: the config's packing has nothing to fill
