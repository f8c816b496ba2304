"""costplan validate: published measurements predicted through `estimate`, beside the naive rules."""

import collections
import json

import pytest
from click.testing import CliRunner

import costplan
from costplan.cli import cli
from costplan.tables import read_table
from costplan.validate import KINDS, architecture, summarize, validate


@pytest.fixture(scope="module")
def validated():
    return validate()


def test_published_runs_are_sourced_and_split_by_source():
    rows = read_table("published_runs")
    assert len(rows) >= 500
    assert {r["kind"] for r in rows} >= set(KINDS)
    assert all(r["source"] and r["as_of"] and r["split"] in ("fit", "holdout") for r in rows)
    # A source group never lands in both splits of a kind: the split is by source, not by row.
    splits = collections.defaultdict(set)
    for r in rows:
        splits[(r["kind"], r["group"])].add(r["split"])
    assert all(len(s) == 1 for s in splits.values())
    for kind in ("pretrain", "throughput", "finetune_throughput", "decode"):
        assert {r["split"] for r in rows if r["kind"] == kind} == {"fit", "holdout"}


def test_a_row_is_predicted_by_estimate_itself(validated):
    # Llama 2 7B: 184,320 A100-80GB hours for 2T tokens at 4K context in 4M-token batches.
    results, _ = validated
    row = next(r for r in results if r.name == "Llama-2-7B")
    est = costplan.estimate("llama-2-7b", "pretrain", gpu="a100-80gb", tokens=2e12, seq_len=4096,
                            global_batch=round(4e6 / 4096), price=0.0)
    assert row.predicted == pytest.approx(est.gpu_hours, rel=1e-9)
    assert row.reported == 184_320 and abs(row.error) < 0.25
    # The naive rule: 6 N D / (0.4 x 312 TFLOPS).
    assert row.naive == pytest.approx(6 * 6_738_415_616 * 2e12 / (0.4 * 312e12) / 3600)


def test_decode_roofline_by_hand(validated):
    results, _ = validated
    row = next(r for r in results if r.name == "gptfast-l2-7b-bf16-a100")
    assert row.naive == pytest.approx(2039e9 / (6_738_415_616 * 2))  # bandwidth over the weights' bytes
    assert row.reported == pytest.approx(104.9)
    assert abs(row.error) < abs(row.naive_error)


def test_every_row_is_reported_once_with_a_reason_when_skipped(validated):
    results, skipped = validated
    assert len(results) + len(skipped) == len(read_table("published_runs")) - sum(
        1 for r in read_table("published_runs") if r["kind"] not in KINDS)
    assert all(s.reason for s in skipped)
    # Figures that would need more than the GPU's dense peak are mislabelled totals, not per-GPU.
    assert any("dense peak" in s.reason for s in skipped)


def test_summary_by_kind_and_split_beats_the_naive_rule_where_it_is_fitted(validated):
    results, _ = validated
    summary = {(s.kind, s.split): s for s in summarize(results)}
    for kind in ("pretrain", "throughput", "finetune_throughput", "decode"):
        for split in ("fit", "holdout", "all"):
            assert (kind, split) in summary
        fitted = summary[(kind, "fit")]
        assert fitted.beats_naive, fitted
    assert summary[("throughput", "all")].median_abs < 0.15
    assert summary[("decode", "all")].median_abs < summary[("decode", "all")].naive_median_abs / 2


def test_fine_tuning_memory_fit_and_context_beat_the_naive_rules(validated):
    """Memory per stack as each source ran it: the verdicts right on at least 90% of the setups that
    ran or went out of memory, peak memory and the longest context well ahead of the naive rules."""
    results, _ = validated
    summary = {(s.kind, s.split): s for s in summarize(results)}
    fit = summary[("fit", "all")]
    assert fit.rows >= 100 and fit.median_abs <= 0.10 and fit.median_abs < fit.naive_median_abs
    memory = summary[("memory", "all")]
    assert memory.rows >= 100 and memory.median_abs < memory.naive_median_abs / 2
    context = summary[("max_context", "all")]
    assert context.rows >= 10 and context.median_abs < context.naive_median_abs / 2
    # Per stack, the rows of each framework the sources name.
    frameworks = {r["name"]: r["framework"] for r in read_table("published_runs") if r["kind"] == "memory"}
    for stack in ("hf-trainer", "litgpt", "torchtune", "fsdp"):
        rows = [r for r in results if r.kind == "memory" and frameworks.get(r.name) == stack]
        errors = sorted(abs(r.error) for r in rows)
        naive = sorted(abs(r.naive_error) for r in rows)
        assert len(rows) >= 10 and errors[len(errors) // 2] < naive[len(naive) // 2], stack


def test_architecture_strings_count_learned_positions_for_the_sequence():
    gpt2 = architecture("hidden=768;layers=12;heads=12;kv_heads=12;ffn=3072;vocab=50257;mlp=plain;pos=learned;"
                        "tied=true", positions=1024)
    from costplan.model import count_params

    assert count_params(gpt2).total == pytest.approx(124e6, rel=0.02)


def test_cli_validate_json():
    result = CliRunner().invoke(cli, ["validate", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["rows"] and data["summary"] and all("error" in r for r in data["rows"])
    assert {s["split"] for s in data["summary"]} == {"fit", "holdout", "all"}


def test_a_rows_stated_switches_become_the_estimates_options():
    from costplan.validate import _stack_options

    row = {"method": "full", "framework": "torchtune", "switches": "compile;fsdp-cpu-offload", "gpus": "8",
           "as_of": "2024-09-01"}
    _, extra = _stack_options(row, {})
    assert extra["offload"] == ("optimizer", "params") and extra["runtime"] == "compiled"
    # LitGPT's multi-GPU runs before Lightning-AI/pytorch-lightning#18190 (2023-07-30) loaded the checkpoint
    # through Fabric's gathering load_raw; its LoRA ran FSDP1 over whole Blocks until 2025-08-13.
    litgpt = {"method": "lora", "framework": "litgpt", "switches": "fsdp-full-shard", "gpus": "2",
              "as_of": "2023-07-01"}
    _, extra = _stack_options(litgpt, {})
    assert extra["gathered_load"] is True and extra["zero"] == 3 and extra["flat_unit_gradients"] is True
    _, extra = _stack_options({**litgpt, "as_of": "2023-10-27"}, {})
    assert "gathered_load" not in extra and extra["flat_unit_gradients"] is True
    _, extra = _stack_options({**litgpt, "as_of": "2025-09-01"}, {})
    assert "flat_unit_gradients" not in extra
    _, extra = _stack_options({**litgpt, "method": "full", "as_of": "2024-04-26"}, {})
    assert "flat_unit_gradients" not in extra  # every parameter trains: nothing mixed
    # torchtune ran torchao 0.1 (whole-matrix NF4 quantization at load) until 2024-06-26.
    tune = {"method": "qlora", "framework": "torchtune", "quant": "nf4", "gpus": "1"}
    assert _stack_options({**tune, "as_of": "2024-04-16"}, {})[0].unchunked_quantize is True
    assert _stack_options({**tune, "as_of": "2024-09-24"}, {})[0].unchunked_quantize is False
    assert _stack_options({**tune, "framework": "hf-trainer", "as_of": "2024-04-16"}, {})[0].unchunked_quantize is False
    # A loop that keeps the model's outputs: fp32 logits under transformers before 4.46, 16-bit after.
    loop = {"method": "qlora", "framework": "fsdp", "switches": "fsdp-full-shard; keeps-outputs", "gpus": "2"}
    assert _stack_options({**loop, "as_of": "2024-05-03"}, {})[1]["held_logits"] == "fp32"
    assert _stack_options({**loop, "as_of": "2025-01-10"}, {})[1]["held_logits"] == "compute"


def test_transformers_rows_before_sdpa_became_its_default_run_eager_attention():
    # transformers 4.36 (2023-12-11) made SDPA the default attention; FastChat's V100 QLoRA run of
    # 2023-10 kept the s² scores, which is why 2048 tokens ran out of 32 GB where 1024 fitted.
    from costplan.model import preset
    from costplan.validate import _common

    row = {"kind": "fit", "gpu": "v100", "framework": "hf-trainer", "precision": "fp16-mixed", "as_of": "2023-10-13",
           "switches": "deepspeed;zero2"}
    assert _common(row, preset("llama-2-7b"))["attention"] == "eager"
    assert "attention" not in _common({**row, "kind": "throughput"}, preset("llama-2-7b"))  # speed tables: as stated
    assert "attention" not in _common({**row, "switches": "flash-attn2"}, preset("llama-2-7b"))
    # Axolotl's xformers_attention patched Llama with xformers' memory-efficient attention (no s² scores).
    assert "attention" not in _common({**row, "framework": "axolotl", "switches": "xformers"}, preset("llama-2-7b"))
    assert "attention" not in _common({**row, "as_of": "2024-01-10"}, preset("llama-2-7b"))
    assert "attention" not in _common({**row, "framework": "litgpt"}, preset("llama-2-7b"))
    fits = {r["name"]: r for r in read_table("published_runs") if r["kind"] == "fit" and "FastChat" in r["name"]}
    from costplan.validate import predict

    verdicts = {name: predict(r)[0] for name, r in fits.items()}  # 1.0: does not fit
    assert sorted(verdicts.values()) == [0.0, 1.0]
    assert all((v == 1.0) == ("2048" in name) for name, v in verdicts.items())


def test_hours_from_steps_times_a_measured_step_time_carry_no_run_overheads():
    # llm.c's scripts state steps x measured ms/iter, not a logged run: the steady-state steps only.
    from costplan.api import estimate, make_method, run_goodput
    from costplan.profile import default_profile
    from costplan.validate import predict

    row = next(r for r in read_table("published_runs") if r["name"] == "llm.c GPT-2 124M" and r["kind"] == "pretrain")
    assert "step-time" in row["switches"] and row["tp"] == "1" and row["zero"] == "1"
    steps, _, _ = predict(row)
    whole, _, _ = predict({**row, "switches": ""})
    goodput = run_goodput(make_method("pretrain"), default_profile())
    assert goodput < 1 and steps == pytest.approx(whole * goodput)
    est = estimate("gpt2", "pretrain", tokens=1e9, gpu="a100-80gb", gpus=8, steady_state=True)
    assert any("no whole-run allowance" in note for note in est.assumptions)


def test_torchtunes_logged_peaks_are_read_as_the_allocators_reserved_bytes():
    # torchtune's recipes log the caching allocator's peaks, which count neither the CUDA context nor
    # managed (paged) optimizer states: an unnamed peak of a torchtune README is its reserved bytes.
    from costplan.api import estimate
    from costplan.validate import predict

    row = {"kind": "memory", "name": "t", "model": "llama-2-7b", "gpu": "rtx-4090", "gpus": "1",
           "framework": "torchtune", "method": "full", "precision": "bf16-true", "seq_len": "2048",
           "micro_batch": "2", "grad_ckpt": "true", "optimizer": "paged-adamw", "metric": "unknown",
           "as_of": "2024-09-01"}
    est = estimate("llama-2-7b", "full", tokens=1e8, gpu="rtx-4090", gpus=1, framework="torchtune",
                   precision="bf16-true", seq_len=2048, micro_batch=2, global_batch=2, grad_ckpt=True,
                   optimizer="paged-adamw")
    assert est.memory.managed_bytes > 0
    predicted, _, detail = predict(row)
    assert predicted == pytest.approx(est.memory.reserved_bytes / 2**30) and detail.startswith("reserved")
    other, _, _ = predict({**row, "framework": "hf-trainer", "optimizer": "adamw"})
    assert other != pytest.approx(predicted)
    # Axolotl's trainer logs the allocator's peaks since axolotl-ai-cloud/axolotl#2977 (2025-07-31).
    axolotl = {**row, "framework": "axolotl", "optimizer": "adamw"}
    assert predict({**axolotl, "as_of": "2025-08-27"})[2].startswith("reserved")
    assert predict({**axolotl, "as_of": "2024-04-18"})[2].startswith("unknown")


def test_a_memory_rows_stated_global_batch_is_its_layout():
    """A memory row that states its global batch (as well as its accumulation) is predicted at it."""
    from costplan.validate import predict

    row = {"kind": "memory", "name": "t", "model": "llama-2-7b", "gpu": "a100-80gb", "gpus": "2",
           "framework": "fsdp", "method": "full", "precision": "bf16-true", "seq_len": "1024",
           "micro_batch": "1", "grad_accum": "2", "grad_ckpt": "true", "metric": "reserved", "as_of": "2025-01-01"}
    assert predict({**row, "global_batch": "4"}) == predict(row)
    assert "x4" in predict({**row, "global_batch": "8", "grad_accum": ""})[2]


def test_torchtune_rows_follow_the_loss_their_recipes_ran():
    # Until pytorch/torchtune#1235 (2024-07-28) the recipes held the model's fp32 logits through
    # backward; until #1390 (2024-08-28) the configs' loss was torch.nn.CrossEntropyLoss over all
    # of them; since, CEWithChunkedOutputLoss. A row may state the un-chunked loss (full-ce).
    from costplan.activations import logit_count
    from costplan.methods import Lora
    from costplan.model import preset
    from costplan.validate import _stack_options, predict
    from costplan.workload import Workload

    row = {"kind": "memory", "name": "t", "model": "llama-3-8b", "gpu": "a100-80gb", "gpus": "1",
           "framework": "torchtune", "method": "lora", "precision": "bf16-true", "seq_len": "4096",
           "micro_batch": "1", "grad_ckpt": "true", "metric": "allocated"}
    options = [_stack_options({**row, "as_of": day}, {})[1] for day in ("2024-04-24", "2024-08-01", "2024-09-01")]
    assert [(o.get("loss"), o.get("held_logits")) for o in options] == [("full", "fp32"), ("full", None),
                                                                          (None, None)]
    assert _stack_options({**row, "as_of": "2024-11-18", "switches": "compile;full-ce"}, {})[1]["loss"] == "full"
    # A plain AdamW was torch's foreach step until the configs set fused: True (#1575, 2024-09-14).
    stated = {**row, "optimizer": "adamw"}
    assert [_stack_options({**stated, "as_of": day}, {})[1]["optimizer"] for day in ("2024-05-09", "2024-09-24")] \
        == ["adamw", "adamw-fused"]
    # Held, the fp32 logits (4 bytes each) sit under the loss's backward peak, at the top of backward.
    held, _, _ = predict({**row, "as_of": "2024-04-24"})
    full, _, _ = predict({**row, "as_of": "2024-08-01"})
    chunked, _, _ = predict({**row, "as_of": "2024-09-01"})
    logits = logit_count(preset("llama-3-8b"), Lora(), Workload(seq_len=4096))
    assert (held - full) * 2**30 == pytest.approx(4 * logits, rel=1e-9)
    # The full loss's backward holds 12 bytes per logit (the fp32 log-softmax, its gradient and the
    # logits' gradient); chunked, 4 per logit kept and one chunk's transient.
    assert (full - chunked) * 2**30 > 6 * logits


def test_only_the_trainers_fsdp_rows_accumulate_without_sync():
    from costplan.model import preset
    from costplan.validate import _common

    row = {"kind": "pretrain", "gpu": "a100-40gb", "gpus": "440", "framework": "fsdp", "seq_len": "2048"}
    composer = _common({**row, "stack": "MosaicML llm-foundry/Composer (FSDP, LION optimizer)"}, preset("7b"))
    trainer = _common({**row, "stack": "accelerate-fsdp"}, preset("7b"))
    assert composer["sync_each_batch"] is True and "sync_each_batch" not in trainer


def test_axolotl_kept_peft_s_fp32_upcast_unless_flash_attention_cast_it_back():
    from costplan.validate import _stack_options

    row = {"method": "lora", "framework": "axolotl", "quant": "nf4-dq", "gpus": "1", "as_of": "2023-08-03",
           "switches": "xformers"}
    assert _stack_options(row, {})[1]["kbit_upcast"] is True
    for switches in ("flash-attn2", "fsdp-full-shard;xformers"):
        assert "kbit_upcast" not in _stack_options({**row, "switches": switches}, {})[1]
    assert "kbit_upcast" not in _stack_options({**row, "quant": "none"}, {})[1]
    # Since axolotl-ai-cloud/axolotl#1083 (2024-01-10) every adapter's model is cast back.
    assert "kbit_upcast" not in _stack_options({**row, "as_of": "2024-04-18"}, {})[1]


def test_llama_factory_rows_checkpoint_unless_they_say_otherwise():
    # LLaMA-Factory enables gradient checkpointing unless disable_gradient_checkpointing is set; the
    # Trainer alone does not. A row that does not state it runs the stack's default.
    from costplan.validate import predict

    row = {"kind": "memory", "name": "q", "model": "llama-2-7b", "gpu": "a100-80gb", "gpus": "1",
           "framework": "hf-trainer", "stack": "llama-factory", "method": "lora", "seq_len": "1024",
           "micro_batch": "4", "metric": "allocated", "as_of": "2023-12-28"}
    factory, _, detail = predict(row)
    trainer, _, plain = predict({**row, "stack": "hf-trainer"})
    assert detail.endswith("ckpt") and not plain.endswith("ckpt") and factory < 0.6 * trainer
    assert predict({**row, "grad_ckpt": "false"})[0] == pytest.approx(trainer)


def test_quantized_rows_keep_the_4bit_matmuls_inputs_where_their_bitsandbytes_did():
    # bitsandbytes before 0.43.2 (2024-07-16) kept each 4-bit matmul's input for backward; LitGPT
    # pinned 0.42.0 until 2024-12-28, so its QLoRA rows of 2024-09 keep them too, the Trainer's do not.
    import costplan.api
    from costplan.validate import predict

    seen = []
    original = costplan.api.estimate

    def spy(*args, **kwargs):
        seen.append(args[1])
        return original(*args, **kwargs)

    row = {"kind": "memory", "name": "q", "model": "llama-2-7b", "gpu": "a10g", "gpus": "1", "framework": "litgpt",
           "method": "qlora", "precision": "bf16-true", "seq_len": "512", "micro_batch": "2", "grad_ckpt": "false",
           "quant": "nf4", "lora_targets": "q;v", "metric": "allocated", "as_of": "2024-09-27"}
    costplan.api.estimate = spy
    try:
        kept, _, _ = predict(row)
        later, _, _ = predict({**row, "as_of": "2025-01-15"})
        trainer, _, _ = predict({**row, "framework": "hf-trainer"})
        early, _, _ = predict({**row, "framework": "hf-trainer", "as_of": "2024-05-01"})
    finally:
        costplan.api.estimate = original
    assert [m.bnb_keeps_input for m in seen] == [True, False, False, True]
    assert kept > later and early > trainer


def test_torchtune_and_unsloth_quantize_their_scalers_whatever_the_row_says():
    # torchao's NF4Tensor always stores int8 block scalers with a factor per 256 blocks (the layout of
    # bitsandbytes' double quantization); a torchtune row's bare "nf4" names the format, not the option.
    from costplan.validate import _stack_options

    row = {"method": "qlora", "framework": "torchtune", "quant": "nf4", "as_of": "2024-09-24", "lora_rank": "8",
           "lora_targets": "q;v"}
    assert _stack_options(row, {})[0].double_quant
    assert not _stack_options({**row, "framework": "hf-trainer"}, {})[0].double_quant
    # Unsloth's loader builds its BitsAndBytesConfig with bnb_4bit_use_double_quant=True
    assert _stack_options({**row, "framework": "unsloth"}, {})[0].double_quant


def test_torchtunes_decoder_upcasts_the_full_logits_outside_a_compiled_loss():
    from costplan.frameworks import frameworks

    stacks = frameworks()
    assert stacks["torchtune"].output_upcast and stacks["torchtune"].loss_fp32
    assert not any(stacks[key].output_upcast for key in stacks if key != "torchtune")
    est = costplan.estimate("llama-3-8b", "full", gpu="a100-80gb", framework="torchtune", runtime="compiled",
                            loss="full", seq_len=2048, micro_batch=1, tokens=1e6)
    assert est.workload.output_upcast and est.workload.compiled
    assert any("upcasts the full logits before the compiled loss" in note for note in est.assumptions)


def test_rows_under_what_their_optimizer_step_holds_are_skipped_as_mislabelled():
    # LitGPT's config-hub table gives Llama 3.2 1B and 3B full fine-tuning on one A10G at 8.70 and 16.51 GB,
    # under the bf16 weights, gradients and AdamW states alone (1.5 B x 8 bytes = 12 GB for the 1B as LitGPT
    # builds it, 3.6 B x 8 = 29 GB for the 3B, whose 24 GB card could not have run it either).
    from costplan.errors import CostplanError
    from costplan.validate import predict

    run = validate(("memory", "fit"))
    mislabelled = {(s.kind, s.name) for s in run.skipped if "not as labelled" in s.reason}
    assert mislabelled == {("memory", "litgpt config hub: llama-3.2-1B/full.yaml (1xA10G used)"),
                           ("memory", "litgpt config hub: llama-3.2-3B/full.yaml (1xA10G used)"),
                           ("fit", "litgpt config hub: llama-3.2-3B/full.yaml (1xA10G used)")}
    row = next(r for r in read_table("published_runs") if r["kind"] == "memory"
               and r["name"] == "litgpt resource table: 7 B Llama 2 LoRA mb1 1xA100-40GB")
    predict(row)  # 19.84 GiB: above the 13.5 GB of bf16 weights
    with pytest.raises(CostplanError, match="not as labelled"):
        predict({**row, "reported": "10"})  # under 80% of them


def test_axolotl_rows_take_the_lora_dropout_their_configs_set():
    # Devstral's example config sets lora_dropout 0, so Axolotl's auto-enabled LoRA_MLP kernel runs
    # (axolotl-ai-cloud/axolotl#2589); at its usual 0.05 the kernel stays off until #3528 and peft's
    # modules keep their dropout masks and dropped copies: more memory.
    from costplan.validate import predict

    rows = [r for r in read_table("published_runs") if r["framework"] == "axolotl" and r["method"] in ("lora", "qlora")]
    devstral = next(r for r in rows if r["kind"] == "memory" and "Devstral-Small-2505" in r["name"])
    assert "lora-dropout=0" in devstral["switches"].split(";")
    at_zero = predict(devstral)[0]
    stated = devstral["switches"].replace("lora-dropout=0", "lora-dropout=0.05")
    at_default = predict({**devstral, "switches": stated})[0]
    assert at_default > at_zero * 1.03
    # Every row from before the kernels existed (2025-04-29) states the dropout that kept them off anyway.
    for row in rows:
        if row["as_of"] < "2025-04-29":
            assert "lora-dropout=0.05" in row["switches"].split(";"), row["name"]


def test_rows_without_a_stated_dropout_take_their_scripts_default():
    # torchtune's LoRA builders defaulted to dropout 0.05 until pytorch/torchtune#1492 (2024-09-11), which
    # its configs did not expose; Answer.AI's fsdp_qlora train.py defaults to 0.1. A stated value wins.
    from costplan.validate import predict

    memory = [r for r in read_table("published_runs") if r["kind"] == "memory"]
    basement = "fsdp_qlora bench Case Study: A Dual 3090 'Basement Rig': llama-2-7b qlora ctx2048 bs4"
    for name, default in (("torchtune README 2024-05: Llama2-7B QLoRA 1x4090", 0.05), (basement, 0.1)):
        row = next(r for r in memory if r["name"].startswith(name))
        assert "lora-dropout" not in row["switches"]
        stated = predict({**row, "switches": row["switches"] + f";lora-dropout={default}"})[0]
        assert predict(row)[0] == stated > predict({**row, "switches": row["switches"] + ";lora-dropout=0"})[0]


def test_axolotl_rows_reserve_as_the_allocator_they_ran_under():
    # Axolotl's own log of its Seed-OSS example (axolotl-ai-cloud/axolotl#3104) reads 27.13 GiB allocated and
    # 27.72 GiB reserved: under expandable segments the README's figure is the peak plus about 2%, and the
    # predicted peak is within 2% of the logged one. Rows from before axolotl#2183 (2024-12-17), which first
    # set the allocator mode before CUDA started, keep the default allocator's reserve.
    from costplan.validate import _stack_options, predict

    rows = [r for r in read_table("published_runs") if r["framework"] == "axolotl" and r["kind"] == "memory"]
    seed = next(r for r in rows if "Seed-OSS-36B" in r["name"])
    predicted = predict(seed)[0]
    assert predicted / 1.022 == pytest.approx(27.13, rel=0.02)
    assert predicted == pytest.approx(27.72, rel=0.02)
    before = [r for r in rows if r["as_of"] < "2024-12-17"]
    assert before
    for row in before:
        assert _stack_options(row, {})[1]["expandable_segments"] is False, row["name"]
    for row in rows:
        if row["as_of"] >= "2024-12-17":
            assert "expandable_segments" not in _stack_options(row, {})[1], row["name"]
