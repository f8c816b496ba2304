"""Every GPU check in one run: calibration, then real training steps measured against the estimate.

    python benchmarks/gpu_check.py                  # on a GPU machine: ~5-8 minutes
    python benchmarks/gpu_check.py --quick          # fewer models and steps
    python benchmarks/gpu_check.py --cpu --quick    # the CPU path (what the tests run)

On a GPU it runs `costplan calibrate` (full suite; the profile is written beside the table), then for
small models (GPT-2, TinyLlama-1.1B, Pythia-1B) and each method (full fine-tuning, LoRA, prompt
tuning, and QLoRA with real bitsandbytes NF4 layers) a few real training steps in bf16 on the GPU:
the median step time (CUDA events), `torch.cuda.max_memory_allocated` and `max_memory_reserved`,
beside what `costplan estimate` predicts for the same configuration (one GPU, the same micro-batch
and sequence, no checkpointing, the table's constants and, separately, the fresh profile). It
writes `gpu_check.csv` and `gpu_check.md` into --out (default benchmarks/output/gpu_check/).

Without a GPU (or with --cpu) the same loop runs a tiny Llama-shaped model on the CPU in fp32: step
times are measured but have no GPU estimate to compare with, and the peak is the live tensor bytes
that costplan.tracing follows during a real step, against the analytic peak.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

COLUMNS = ("device", "model", "method", "precision", "seq_len", "micro_batch", "measured_step_s",
           "estimated_step_s", "estimated_step_calibrated_s", "step_error", "measured_allocated_bytes",
           "estimated_peak_bytes", "allocated_error", "measured_reserved_bytes", "estimated_reserved_bytes",
           "reserved_error")


def measure_gpu(spec, method, seq_len: int, micro_batch: int, steps: int) -> dict:
    import torch

    from costplan.tracing import apply_method, build_model, quantize_with_bitsandbytes

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    module = build_model(spec, device="cuda", dtype=torch.bfloat16)
    if method.base_storage != "compute":
        quantize_with_bitsandbytes(module, spec, method)
    module = apply_method(module, method)
    module.train()
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, foreach=True)
    ids = torch.randint(0, spec.vocab_size, (micro_batch, seq_len), device="cuda")
    times = []
    for i in range(steps + 2):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        loss = module(input_ids=ids, labels=ids).loss
        loss.backward()
        del loss
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        end.record()
        torch.cuda.synchronize()
        if i >= 2:  # warm-up: the first steps allocate optimizer states and tune kernels
            times.append(start.elapsed_time(end) / 1000)
    result = {"measured_step_s": statistics.median(times),
              "measured_allocated_bytes": torch.cuda.max_memory_allocated(),
              "measured_reserved_bytes": torch.cuda.max_memory_reserved()}
    del module, optimizer
    torch.cuda.empty_cache()
    return result


def measure_cpu(spec, method, seq_len: int, micro_batch: int, steps: int) -> dict:
    import torch

    from costplan.tracing import apply_method, build_model, trace_training_step
    from costplan.workload import Workload

    torch.manual_seed(0)
    module = apply_method(build_model(spec, device="cpu", dtype=torch.float32), method)
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, foreach=True)
    ids = torch.randint(0, spec.vocab_size, (micro_batch, seq_len))
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        loss = module(input_ids=ids, labels=ids).loss
        loss.backward()
        del loss
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i >= 1:
            times.append(time.perf_counter() - t0)
    traced = trace_training_step(spec, method, Workload(seq_len=seq_len, micro_batch=micro_batch, precision="fp32"))
    return {"measured_step_s": statistics.median(times), "measured_allocated_bytes": traced.peak_bytes,
            "measured_reserved_bytes": None}


def estimate_row(spec, method_key: str, gpu_key: str | None, precision: str, seq_len: int, micro_batch: int,
                 profile=None) -> dict:
    import costplan
    from costplan.verify import analytic_breakdown
    from costplan.workload import Workload

    if gpu_key is None:  # no GPU to estimate time on: the analytic memory of the step alone
        from costplan.api import make_method

        method = make_method(method_key)
        memory = analytic_breakdown(spec, method, Workload(seq_len=seq_len, micro_batch=micro_batch,
                                                          precision=precision))
        return {"estimated_step_s": None, "estimated_peak_bytes": memory.peak_bytes,
                "estimated_reserved_bytes": memory.reserved_bytes}
    est = costplan.estimate(spec, method_key, gpu=gpu_key, gpus=1, micro_batch=micro_batch, global_batch=micro_batch,
                            seq_len=seq_len, grad_ckpt=False, precision=precision, tokens=1e6, price=0.0,
                            profile=profile)
    return {"estimated_step_s": float(est.step.total), "estimated_peak_bytes": est.memory.peak_bytes,
            "estimated_reserved_bytes": est.memory.reserved_bytes}


def _error(measured, estimated):
    if not measured or not estimated:
        return None
    return estimated / measured - 1


def run(*, cpu: bool, quick: bool, out: Path) -> list[dict]:
    import torch

    from costplan.api import make_method
    from costplan.calibrate import calibrate, describe_device, match_gpu_row, write_json_atomically
    from costplan.model import ModelSpec, preset
    from costplan.profile import load_profile

    gpu = torch.cuda.is_available() and not cpu
    out.mkdir(parents=True, exist_ok=True)
    device = describe_device() if gpu else {"kind": "cpu", "name": "CPU"}
    gpu_key = match_gpu_row(device) if gpu else None
    profile = None
    if gpu:
        data = calibrate(preset("tinyllama-1.1b"), quick=quick)
        write_json_atomically(data, out / "profile.json")
        profile = load_profile(out / "profile.json")
        models = [preset("gpt2"), preset("tinyllama-1.1b")] + ([] if quick else [preset("pythia-1b")])
        methods = ["full", "lora", "prompt", "qlora"]
        seq_len, micro_batch, steps, precision = (512, 4, 5, "bf16") if quick else (1024, 4, 10, "bf16")
    else:
        models = [ModelSpec(name="tiny-llama", family="llama", hidden_size=128, num_layers=2, num_heads=4,
                            num_kv_heads=2, head_dim=32, ffn_size=344, vocab_size=512, max_positions=256)]
        methods = ["full", "lora", "prompt"]
        seq_len, micro_batch, steps, precision = 64, 2, 2 if quick else 5, "fp32"
    rows = []
    for spec in models:
        for key in methods:
            method = make_method(key)
            measure = measure_gpu if gpu else measure_cpu
            try:
                measured = measure(spec, method, seq_len, micro_batch, steps)
            except Exception as exc:  # e.g. bitsandbytes missing: say so in the table, keep going
                print(f"{spec.name} {key}: not measured ({type(exc).__name__}: {exc})", file=sys.stderr)
                continue
            estimated = estimate_row(spec, key, gpu_key, precision, seq_len, micro_batch)
            calibrated = estimate_row(spec, key, gpu_key, precision, seq_len, micro_batch, profile) if profile \
                else {"estimated_step_s": None}
            row = {"device": device["name"], "model": spec.name, "method": key, "precision": precision,
                   "seq_len": seq_len, "micro_batch": micro_batch, **measured, **estimated,
                   "estimated_step_calibrated_s": calibrated["estimated_step_s"]}
            row["step_error"] = _error(row["measured_step_s"], row["estimated_step_s"])
            row["allocated_error"] = _error(row["measured_allocated_bytes"], row["estimated_peak_bytes"])
            row["reserved_error"] = _error(row["measured_reserved_bytes"], row["estimated_reserved_bytes"])
            rows.append({c: row.get(c) for c in COLUMNS})
    write(rows, out)
    return rows


def write(rows: list[dict], out: Path) -> None:
    from costplan.files import write_atomically

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_atomically(out / "gpu_check.csv", buffer.getvalue())

    def fmt(v, kind):
        if v is None:
            return "-"
        return {"s": f"{v * 1e3:.1f} ms", "b": f"{v / 2**30:.2f} GiB", "e": f"{v:+.1%}"}[kind]

    lines = ["| model | method | step measured | step estimated | error | allocated | estimated peak | error | "
             "reserved | estimated reserved | error |", "|" + "---|" * 11]
    for r in rows:
        lines.append(f"| {r['model']} | {r['method']} | {fmt(r['measured_step_s'], 's')} | "
                     f"{fmt(r['estimated_step_s'], 's')} | {fmt(r['step_error'], 'e')} | "
                     f"{fmt(r['measured_allocated_bytes'], 'b')} | {fmt(r['estimated_peak_bytes'], 'b')} | "
                     f"{fmt(r['allocated_error'], 'e')} | {fmt(r['measured_reserved_bytes'], 'b')} | "
                     f"{fmt(r['estimated_reserved_bytes'], 'b')} | {fmt(r['reserved_error'], 'e')} |")
    device = rows[0]["device"] if rows else "?"
    write_atomically(out / "gpu_check.md", f"# GPU check on {device}\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="Run the CPU path even where a GPU is present.")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "output" / "gpu_check")
    args = parser.parse_args()
    rows = run(cpu=args.cpu, quick=args.quick, out=args.out)
    print(json.dumps({"rows": len(rows)}))


if __name__ == "__main__":
    main()
