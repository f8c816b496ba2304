"""Property-based tests (hypothesis) over what a user can hand costplan: command-line arguments,
config.json files and calibration profiles.

What is covered, in-process through click's CliRunner (about 1,100 generated cases, within a
minute on a 2-core machine; no per-example deadline):

- ``estimate`` (every numeric, name and flag option), ``compare``, ``plan`` (small grids, so each
  case stays fast), ``cram``, ``models`` and ``gpus``, with values drawn from valid ones, edges
  (0, -0, 1, the bounds) and garbage: NaN, inf, 1e308, 1e-300, 2**63, 300-digit integers, empty
  and long strings, wrong suffixes, unknown names, NUL bytes;
- ``--dataset`` files (JSONL, JSON lists, text, broken and empty ones, a folder, a missing path) with
  ``--padding`` and the layout options on ``estimate``, ``compare`` and ``plan``;
- ``config.json`` files for the llama, mixtral, gpt_oss, gpt2, bert, glm4_moe, glm4_moe_lite, starcoder2 and
  ernie4_5 families and the mistral3, qwen2_5_vl and gemma3 image-text containers, with valid but extreme sizes
  (at their limits: 10^6 hidden, 10^4 layers, 10^7 vocabulary...), fields replaced by any JSON value
  (NaN/Infinity literals, 1e200, 200-digit integers, zero, negatives, strings, lists, nested
  objects, bools, null) or dropped, and files that are not JSON at all;
- calibration profiles with fields replaced the same way, passed with ``--profile`` and saved in
  the cache (``COSTPLAN_CACHE``), where a bad one must be skipped with a warning.

The properties, for every case: no traceback; exit code 0 or 2; on 2, nothing on stdout and
exactly one ``Error:`` line on stderr (besides ``Warning:`` lines about skipped saved profiles);
on 0, no NaN or infinity printed anywhere, every ``--json`` answer valid JSON (``json.loads``
with a ``parse_constant`` that raises on NaN/Infinity), and no negative bytes, seconds, hours,
dollars, energy, tokens or GPUs in it. FIFOs and device files, which must not be read at all,
are tested in a subprocess with a timeout (``test_fifo_and_device_files``).
"""

from __future__ import annotations

import atexit
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from costplan.cli import cli
from costplan.frameworks import FRAMEWORK_KEYS

SETTINGS = {"deadline": None, "database": None, "suppress_health_check": list(HealthCheck)}
RUNNER = CliRunner()

# --- values -----------------------------------------------------------------------------------

WEIRD_NUMBERS = ["nan", "NaN", "inf", "-inf", "Infinity", "1e308", "1e-300", "-0", "0", "-1", "0.5", "1", "2",
                 "1e400", str(2**63), "9" * 300, "1e9", "100M", "2.5B", "3T", "1.5g", "50k", "", " ", "lots", "1MB",
                 "2**63", "0x10", "1_000", "\x00", "7 ", "+3", "-5e3", "1e16", "1e17", "65536", "1000001"]
PLAUSIBLE = ["1", "2", "3", "4", "8", "16", "64", "128", "512", "1024", "2048", "4096", "32768", "131072", "0.001",
             "0.1", "0.99", "1.5", "3", "1k", "100k", "1M", "50M", "100M", "1B", "20B", "1T", "15T", "1e16", "1000000",
             "100000000"]
plausible = st.sampled_from(PLAUSIBLE)
numbers = st.one_of(
    plausible, plausible, plausible,  # valid values, often at the edges of their ranges
    st.sampled_from(WEIRD_NUMBERS),
    st.integers(min_value=-10, max_value=10**7).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=12),
)
MODELS = ["7b", "8b", "70b", "gpt2", "bert-base", "mixtral", "llama-3.1-8b", "tinyllama", "qwen2-7b", "gemma-2b",
          "pythia-1b", "gpt-oss-20b", "llama-9b", "", "a" * 300, "x.json", "/nonexistent/config.json", "~nouser/x",
          "bert"]
GPUS = ["h100", "a100", "a100-40gb", "t4", "v100", "rtx-4090", "l40s", "mi300x", "h200", "l4", "a10g", "rtx-a6000",
        "h1000", "", "a" * 200, "t4,v100"]
METHODS = ["inference", "prompt", "prefix", "lora", "qlora", "full", "cpt", "pretrain", "LORA", "dreambooth", ""]
names = st.one_of(st.sampled_from(["q,v", "all-linear", "attn", "mlp", "q,zz", "", "adamw", "adamw-8bit", "sgd",
                                   "adafactor", "adamm", "aws", "runpod", "nowhere", "world", "eu", "0.5", "3",
                                   "48h", "90m", "2d", "soon", "0h", "1e5000h", "9" * 30 + "w"]),
                  st.text(max_size=20))

ESTIMATE_NUMERIC = ["--gpus", "--tokens", "--epochs", "--seq-len", "--micro-batch", "--global-batch",
                    "--global-batch-tokens", "--zero", "--tp", "--pp", "--lora-rank", "--lora-dropout",
                    "--virtual-tokens", "--prompt-len", "--gen-len", "--price", "--pue", "--serve-tokens",
                    "--serve-batch"]
ESTIMATE_CHOICES = {"--method": METHODS, "--gpu": GPUS, "--precision": ["fp32", "bf16", "fp16", "fp8", "fp4"],
                    "--attention": ["flash", "eager", "x"], "--runtime": ["eager", "compiled", "x"],
                    "--framework": [*FRAMEWORK_KEYS, "x"], "--weights": ["mxfp4", "int4", "nf4", "x"]}
ESTIMATE_NAMES = ["--optimizer", "--lora-targets", "--provider", "--grid"]
ESTIMATE_FLAGS = ["--spot", "--grad-ckpt", "--no-grad-ckpt", "--brief", "--expandable-segments",
                  "--no-expandable-segments"]


VALID_CHOICES = {"--method": METHODS[:8], "--gpu": GPUS[:12], "--precision": ["fp32", "bf16", "fp16", "fp8"],
                 "--attention": ["flash", "eager"], "--runtime": ["eager", "compiled"],
                 "--framework": list(FRAMEWORK_KEYS), "--weights": ["mxfp4", "int4", "fp8", "bf16"]}
VALID_NAMES = {"--optimizer": ["adamw", "adamw-fused", "adamw-8bit", "paged-adamw", "sgd", "sgd-momentum", "adafactor"],
               "--lora-targets": ["q,v", "all-linear", "attn", "mlp", "q,k,v,o", "all-linear,experts.7,experts.23"],
               "--provider": ["aws", "runpod"],
               "--grid": ["world", "eu", "us", "france", "0", "0.5", "2"]}


@st.composite
def estimate_args(draw) -> list[str]:
    """Half the cases draw only valid values (deep paths: layouts, offers, what does not fit), half
    mix in garbage (the refusals)."""
    valid = draw(st.booleans())
    args = ["estimate", "--model", draw(st.sampled_from(MODELS[:12] if valid or draw(st.booleans()) else MODELS))]
    for option in draw(st.lists(st.sampled_from(ESTIMATE_NUMERIC), max_size=4, unique=True)):
        args += [option, draw(plausible if valid else numbers)]
    for option in draw(st.lists(st.sampled_from(sorted(ESTIMATE_CHOICES)), max_size=3, unique=True)):
        args += [option, draw(st.sampled_from((VALID_CHOICES if valid else ESTIMATE_CHOICES)[option]))]
    for option in draw(st.lists(st.sampled_from(ESTIMATE_NAMES), max_size=2, unique=True)):
        args += [option, draw(st.sampled_from(VALID_NAMES[option]) if valid else names)]
    args += draw(st.lists(st.sampled_from(ESTIMATE_FLAGS), max_size=2, unique=True))
    if draw(st.booleans()):
        args.append("--json")
    return args


@st.composite
def other_args(draw) -> list[str]:
    command = draw(st.sampled_from(["compare", "plan", "cram", "models", "gpus", "report"]))
    args = [command]
    if command == "compare":
        args += ["--model", draw(st.sampled_from(MODELS)), "--gpu", draw(st.sampled_from(GPUS))]
        for option in draw(st.lists(st.sampled_from(["--tokens", "--cpt-tokens", "--eval-tokens", "--seq-len",
                                                     "--serve-tokens", "--serve-batch", "--price"]),
                                    max_size=3, unique=True)):
            args += [option, draw(numbers)]
        args += draw(st.lists(st.sampled_from(["--spot", "--wide", "--grad-ckpt"]), max_size=2, unique=True))
    elif command == "plan":
        # One GPU type and a small count keep each search to milliseconds.
        args += ["--model", draw(st.sampled_from(MODELS)), "--gpu", draw(st.sampled_from(GPUS)),
                 "--max-gpus", draw(st.sampled_from(["1", "8", "16", "64", "1", "8", "0", "100000", "nan"])),
                 "--tokens", draw(numbers), "--method", draw(st.sampled_from(["lora", "qlora,lora", "full",
                                                                             "inference", "", ",", "x", "prompt"]))]
        for option in draw(st.lists(st.sampled_from(["--epochs", "--budget", "--seq-len", "--global-batch",
                                                     "--price", "--lora-rank"]), max_size=3, unique=True)):
            args += [option, draw(numbers)]
        if draw(st.booleans()):
            args += ["--deadline", draw(names)]
        if draw(st.booleans()):
            args += ["--precision", draw(st.sampled_from(["bf16", "fp8", "bf16,fp8", "fp16", "fp4", ""]))]
    elif command == "cram":
        args += ["--gpu", draw(st.sampled_from(GPUS))]
        if draw(st.booleans()):
            args += ["--model", draw(st.sampled_from(MODELS))]
        for option in draw(st.lists(st.sampled_from(["--hours", "--dataset-tokens", "--seq-len"]), max_size=2,
                                    unique=True)):
            args += [option, draw(numbers)]
        if draw(st.booleans()):
            args += ["--precision", draw(st.sampled_from(["fp16", "bf16", "fp32"]))]
    elif command == "report":
        # Only the refusals: a report that runs takes seconds (tests/test_report.py writes real ones).
        args += ["--out", draw(st.sampled_from(["", " ", "/dev/null", "/etc/hostname/sub", "a" * 300])),
                 "--tokens", draw(numbers)]
    if draw(st.booleans()) and command in ("compare", "plan", "cram", "models", "gpus"):
        args.append("--json")
    return args


# --- the properties ---------------------------------------------------------------------------

NON_FINITE = re.compile(r"(?<![\w-])(nan|inf|infinity)(?![\w-])", re.IGNORECASE)  # not "infinity-fabric"
NEGATIVE_FIGURE = re.compile(r"(-\$|\$-|(?<![\w+])-\d[\d,.]*\s?(GiB|MiB|KiB|TiB|B|GB/s|ms|s|min|h|days|years|kWh)\b)")
NON_NEGATIVE_KEY = re.compile(r"(bytes|seconds|hours|usd|kwh|_kg|gpus|tokens|flops|params|per_second|watts)")


def _refuse(literal: str) -> None:
    raise ValueError(f"{literal} in JSON output")


def _non_negative(value, key: str = "") -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _non_negative(v, str(k))
    elif isinstance(value, list):
        for v in value:
            _non_negative(v, key)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        assert math.isfinite(value), (key, value)
        if NON_NEGATIVE_KEY.search(key) and "error" not in key and "headroom" not in key:  # short of the card: < 0
            assert value >= 0, (key, value)


def check(args: list[str], env: dict[str, str] | None = None) -> None:
    """Invoke the CLI in-process and check every property listed in the module docstring."""
    result = RUNNER.invoke(cli, args, env=env)
    shown = (f"args={args!r}\nexit={result.exit_code}\nstdout={result.stdout[-2000:]!r}\n"
             f"stderr={result.stderr[-2000:]!r}")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"traceback: {result.exception!r}\n{shown}") from result.exception
    assert "Traceback" not in result.output, shown
    assert result.exit_code in (0, 2), shown
    errors = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("Warning: ")]
    if result.exit_code == 2:
        assert not result.stdout.strip(), shown
        assert len(errors) == 1 and errors[0].startswith("Error: "), shown
        return
    assert not NON_FINITE.search(result.stdout), shown
    assert not NEGATIVE_FIGURE.search(result.stdout), shown
    if "--json" in args:
        data = json.loads(result.stdout, parse_constant=_refuse)
        _non_negative(data)


@settings(max_examples=600, **SETTINGS)
@given(estimate_args())
def test_estimate_arguments(args):
    check(args)


@settings(max_examples=250, **SETTINGS)
@given(other_args())
def test_other_commands_arguments(args):
    check(args)


# --- config.json files --------------------------------------------------------------------------

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10**200), max_value=10**200),
              st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=10),
              st.sampled_from([0, -1, 1, 2, 3, 7, 64, 4096, 10**6, 10**7, 1e200, 10**200, 4.5, "4096"])),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=5,
)
CONFIGS = {
    "llama": {"model_type": "llama", "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000, "max_position_embeddings": 4096,
              "head_dim": 64, "hidden_act": "silu", "tie_word_embeddings": False},
    "gpt2": {"model_type": "gpt2", "n_embd": 256, "n_layer": 2, "n_head": 4, "n_positions": 1024, "vocab_size": 1000,
             "n_inner": 1024, "resid_pdrop": 0.1, "attn_pdrop": 0.1},
    "bert": {"model_type": "bert", "hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 2,
             "num_attention_heads": 4, "vocab_size": 1000, "max_position_embeddings": 512, "type_vocab_size": 2,
             "hidden_dropout_prob": 0.1},
    "mixtral": {"model_type": "mixtral", "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2,
                "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000,
                "max_position_embeddings": 4096, "num_local_experts": 4, "num_experts_per_tok": 2},
    "gpt_oss": {"model_type": "gpt_oss", "hidden_size": 256, "intermediate_size": 256, "num_hidden_layers": 4,
                "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64, "vocab_size": 1000,
                "max_position_embeddings": 4096, "num_local_experts": 4, "num_experts_per_tok": 2,
                "sliding_window": 128, "layer_types": ["sliding_attention", "full_attention"] * 2},
    "glm4_moe": {"model_type": "glm4_moe", "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 3,
                 "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64, "vocab_size": 1000,
                 "moe_intermediate_size": 128, "n_routed_experts": 8, "num_experts_per_tok": 2, "n_shared_experts": 1,
                 "first_k_dense_replace": 1, "partial_rotary_factor": 0.5, "attention_bias": True},
    "glm4_moe_lite": {"model_type": "glm4_moe_lite", "hidden_size": 256, "intermediate_size": 512,
                      "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": 1000,
                      "moe_intermediate_size": 128, "n_routed_experts": 8, "num_experts_per_tok": 2,
                      "q_lora_rank": 64, "kv_lora_rank": 48, "qk_rope_head_dim": 16, "qk_nope_head_dim": 32,
                      "v_head_dim": 24, "mlp_layer_types": ["dense", "sparse", "sparse"]},
    "starcoder2": {"model_type": "starcoder2", "hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 2,
                   "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000, "sliding_window": 64,
                   "residual_dropout": 0.1, "embedding_dropout": 0.1, "use_bias": True},
    "ernie4_5": {"model_type": "ernie4_5", "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2,
                 "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000, "use_bias": False},
    # Image-text containers: the fields replaced or dropped are the container's (text_config and vision_config
    # whole, the projector's settings).
    "mistral3": {"model_type": "mistral3", "spatial_merge_size": 2, "vision_feature_layer": -1,
                 "multimodal_projector_bias": False, "tie_word_embeddings": False,
                 "text_config": {"model_type": "ministral3", "hidden_size": 256, "intermediate_size": 512,
                                 "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                                 "head_dim": 64, "vocab_size": 1000},
                 "vision_config": {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
                                   "patch_size": 14}},
    "qwen2_5_vl": {"model_type": "qwen2_5_vl", "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2,
                   "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000,
                   "vision_config": {"depth": 2, "hidden_size": 128, "intermediate_size": 200, "patch_size": 14,
                                     "temporal_patch_size": 2, "spatial_merge_size": 2, "out_hidden_size": 256}},
    "gemma3": {"model_type": "gemma3", "mm_tokens_per_image": 16,
               "text_config": {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 6,
                               "sliding_window": 64},
               "vision_config": {"hidden_size": 96, "intermediate_size": 200, "num_hidden_layers": 2,
                                 "patch_size": 14, "image_size": 112, "vision_use_head": False}},
}


EXTREME = {"hidden_size": [1, 2, 64, 10**6], "intermediate_size": [1, 16, 10**7], "num_hidden_layers": [1, 257, 10**4],
           "num_attention_heads": [1, 4, 10**5], "num_key_value_heads": [1, 4], "vocab_size": [1, 10**7],
           "max_position_embeddings": [1, 2, 130, 10**8], "head_dim": [1, 2, 65536], "num_local_experts": [1, 10**4],
           "num_experts_per_tok": [1, 2, 10**4]}
"""Valid but extreme architecture numbers, at and inside their limits (and experts on any family)."""


@st.composite
def config_files(draw) -> str:
    family = draw(st.sampled_from(sorted(CONFIGS)))
    config = dict(CONFIGS[family])
    for key in draw(st.lists(st.sampled_from(sorted(EXTREME)), max_size=4, unique=True)):
        config[key] = draw(st.sampled_from(EXTREME[key]))
    for key in draw(st.lists(st.sampled_from(sorted(config)), max_size=3, unique=True)):
        if draw(st.booleans()):
            config[key] = draw(json_values)
        else:
            del config[key]
    if draw(st.integers(0, 9)) == 0:
        return draw(st.sampled_from(["", "{", "[1, 2]", "null", "{\"model_type\": \"t5\"}", "[" * 5000 + "]" * 5000,
                                     "\udcff"]))
    return json.dumps(config)  # NaN and inf become the NaN/Infinity literals JSON does not have


@settings(max_examples=200, **SETTINGS)
@given(config_files(), st.sampled_from([["estimate", "--json"], ["estimate"], ["estimate", "--method", "full"],
                                        ["estimate", "--method", "inference", "--json"],
                                        ["estimate", "--method", "prefix"], ["compare", "--json"],
                                        ["plan", "--tokens", "1B", "--json"], ["cram", "--gpu", "a100", "--json"]]))
def test_config_files(text, command):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.json"
        path.write_text(text, encoding="utf-8", errors="surrogateescape")
        check([*command, "--model", str(path)])


# --- datasets --------------------------------------------------------------------------------------

DATASETS = {
    "alpaca.jsonl": "\n".join(json.dumps({"instruction": "w " * (7 * i % 300 + 1), "output": "o " * (i % 9)})
                               for i in range(300)),
    "chat.jsonl": json.dumps({"messages": [{"role": "user", "content": "hi " * 50}, 5, {"content": ["x", {}]}]}),
    "empty.jsonl": "", "blank.txt": "\n \n", "one.txt": "x", "broken.jsonl": "{\"text\": \"a\"}\n{oops",
    "list.json": "[1, null, \"s\", {\"text\": 7}]", "nan.json": "[{\"text\": NaN}]", "fake.parquet": "PAR1 not",
    "long.txt": "y " * 50_000,
}
DATASET_DIR = Path(tempfile.mkdtemp(prefix="costplan-fuzz-"))
atexit.register(shutil.rmtree, DATASET_DIR, ignore_errors=True)
for _name, _text in DATASETS.items():
    (DATASET_DIR / _name).write_text(_text, encoding="utf-8")


@st.composite
def dataset_args(draw) -> list[str]:
    command = draw(st.sampled_from(["estimate", "estimate", "compare", "plan"]))
    where = draw(st.sampled_from([*DATASETS, ".", "missing.jsonl"]))
    args = [command, "--model", draw(st.sampled_from(["7b", "gpt2", "tinyllama", "mixtral"])),
            "--dataset", str(DATASET_DIR / where)]
    if command != "compare":
        args += ["--method", draw(st.sampled_from(["lora", "qlora", "full", "cpt", "pretrain", "prompt",
                                                  "inference"]))]
    if command == "plan":
        args += ["--gpu", draw(st.sampled_from(["a100", "rtx-4090"])), "--max-gpus", "8"]
    if draw(st.booleans()):
        args += ["--padding", draw(st.sampled_from(["longest", "grouped", "max", "packed", "x", ""]))]
    for option in draw(st.lists(st.sampled_from(["--seq-len", "--epochs", "--global-batch"]
                                                + (["--micro-batch"] if command == "estimate" else [])),
                                max_size=2, unique=True)):
        args += [option, draw(st.sampled_from(["1", "3", "64", "2048", "0", "1e9", "nan"]))]
    if draw(st.booleans()):
        args.append("--json")
    return args


@settings(max_examples=60, **SETTINGS)
@given(dataset_args())
def test_dataset_arguments(args):
    check(args)


# --- calibration profiles -------------------------------------------------------------------------

def _good_profile() -> dict:
    return {"version": 1, "created": "2026-11-29", "gpu_key": "h100-sxm", "precision": "bf16", "seq_len": 512,
            "device": {"kind": "cuda", "name": "NVIDIA H100 80GB HBM3", "memory_bytes": 85e9},
            "gemm": [{"dtype": "bf16", "m": 4096, "n": 4096, "k": 4096, "seconds": 0.0002,
                      "flops_per_second": 6.9e14, "spread": {"min": 0.0002, "median": 0.0002, "max": 0.0003}}],
            "copy_bandwidth_bytes_per_second": 2.9e12,
            "attention": {"seq_len": 512, "seconds": 0.001, "flops_per_second": 4e14},
            "methods": {m: {"seconds": 0.1, "predicted_seconds": 0.09, "flops": 1e12, "achieved_flops_per_second": 1e13,
                            "max_allocated": 1e10, "max_reserved": 1.1e10, "analytic_peak": 1e10, "power_watts": 600.0,
                            "context_bytes": 5e8} for m in ("full", "lora", "prompt")},
            "corrections": [{"factor": 1.1, "model": "*", "method": "full", "source": "log"}],
            "collectives": [{"bytes": 2**20, "all_reduce_bus_bytes_per_second": 1e11, "world_size": 8}]}


PROFILE_PATHS = [("version",), ("created",), ("gpu_key",), ("precision",), ("device",), ("device", "kind"),
                 ("device", "name"), ("gemm",), ("gemm", 0), ("gemm", 0, "flops_per_second"), ("gemm", 0, "dtype"),
                 ("gemm", 0, "spread"), ("copy_bandwidth_bytes_per_second",), ("attention",),
                 ("attention", "flops_per_second"), ("methods",), ("methods", "lora"),
                 ("methods", "lora", "max_reserved"), ("methods", "lora", "max_allocated"),
                 ("methods", "full", "power_watts"), ("methods", "full", "context_bytes"),
                 ("methods", "full", "seconds"), ("methods", "full", "predicted_seconds"), ("corrections",),
                 ("corrections", 0, "factor"), ("collectives",), ("collectives", 0, "all_reduce_bus_bytes_per_second")]


@st.composite
def profile_files(draw) -> str:
    data = _good_profile()
    for path in draw(st.lists(st.sampled_from(PROFILE_PATHS), max_size=3, unique=True)):
        target = data
        try:
            for key in path[:-1]:
                target = target[key]
            if draw(st.booleans()):
                target[path[-1]] = draw(json_values)
            elif isinstance(target, dict):
                target.pop(path[-1], None)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier change removed or replaced the parent
    return json.dumps(data)


@settings(max_examples=150, **SETTINGS)
@given(profile_files(), st.booleans())
def test_profiles(text, saved):
    with tempfile.TemporaryDirectory() as folder:
        if saved:  # in the cache: a bad one is skipped with a warning, never an error
            (Path(folder) / "profiles").mkdir()
            (Path(folder) / "profiles" / "h100.json").write_text(text)
            check(["estimate", "--gpu", "h100", "--json"], env={"COSTPLAN_CACHE": folder})
        else:
            path = Path(folder) / "profile.json"
            path.write_text(text)
            check(["estimate", "--gpu", "h100", "--profile", str(path)], env={"COSTPLAN_CACHE": folder})


# --- files that must not be read: a subprocess with a timeout -------------------------------------

@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_and_device_files(tmp_path):
    fifo = tmp_path / "config.json"
    os.mkfifo(fifo)
    profile_fifo = tmp_path / "profile.json"
    os.mkfifo(profile_fifo)
    cache = tmp_path / "cache"
    (cache / "profiles").mkdir(parents=True)
    os.mkfifo(cache / "profiles" / "h100.json")
    os.symlink("/dev/zero", cache / "profiles" / "zero.json")
    cases = [
        ["estimate", "--model", str(fifo)], ["estimate", "--model", "/dev/zero"],
        ["estimate", "--model", "/dev/urandom"], ["plan", "--model", "/dev/zero", "--tokens", "1M"],
        ["cram", "--model", "/dev/zero"], ["compare", "--model", str(fifo)],
        ["estimate", "--profile", str(profile_fifo)], ["estimate", "--profile", "/dev/urandom"],
    ]
    env = dict(os.environ, COSTPLAN_CACHE=str(cache))
    for args in cases:
        run = subprocess.run([sys.executable, "-m", "costplan", *args], capture_output=True, text=True, timeout=60,
                             env=env, cwd=Path(__file__).resolve().parent.parent)
        errors = [line for line in run.stderr.splitlines() if line.strip() and not line.startswith("Warning: ")]
        assert run.returncode == 2 and len(errors) == 1 and errors[0].startswith("Error: "), (args, run.stderr)
        assert "regular file" in errors[0], errors[0]
    # A FIFO and a device in the cache are skipped with a warning; the estimate goes on.
    run = subprocess.run([sys.executable, "-m", "costplan", "estimate", "--gpu", "h100", "--json"],
                         capture_output=True, text=True, timeout=60, env=env,
                         cwd=Path(__file__).resolve().parent.parent)
    assert run.returncode == 0 and json.loads(run.stdout)["gpu"] == "h100-sxm"
    assert len([line for line in run.stderr.splitlines() if line.startswith("Warning: skipped")]) == 2
