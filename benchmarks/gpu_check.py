"""Every GPU check in one run: real training steps and generation measured against the estimate, then calibration.

    python benchmarks/gpu_check.py                  # on a GPU machine: about 4-6 minutes on an H100/H200
    python benchmarks/gpu_check.py --quick          # fewer cases and steps
    python benchmarks/gpu_check.py --cpu --quick    # the CPU path (what the tests run)

Training: each case is one of `costplan verify`'s cases (model, method, precision mode, stack,
checkpointing, sequence, micro-batch), prepared exactly as `verify` prepares it, and run for real on
the GPU by the same code that traces it (`costplan.tracing.trace_training_step`), with QLoRA's base
quantized by bitsandbytes itself. For each case the table holds:
- `torch.cuda.max_memory_allocated` and `max_memory_reserved` over a plain steady-state step, beside
  the analytic peak and reserve of the same configuration (`costplan.verify.analytic_breakdown`) and
  the live tensor bytes costplan's tracer counts on the GPU;
- the median time of a few plain steps (CUDA events), beside `costplan estimate`'s step time for one
  GPU of this type, with the shipped constants and, separately, with the profile calibrated at the end;
- what ran out of memory, beside the verdict the analytic memory gives.

Decode: `generate` in eager mode (transformers' dynamic cache, greedy, no compilation) at batch 1,
tokens/s and time to first token beside `costplan estimate ... --method inference --runtime eager`.

Saved tensors: what autograd keeps from one GPT-2 block's forward under bf16 autocast (micro-batch 8,
sequence 1024, the GPT-2 case's shape), by shape and dtype, as ``torch.autocast`` keeps it on the GPU beside
what costplan's meta-device emulation of autocast (``costplan.autocast``) keeps: the H200 run held 1.81 GB
more in GPT-2's step than the meta trace, exactly one fp32 and one bf16 tensor of the MLP's width per
layer, and this table says which (``saved_tensors.csv``).

Calibration: `costplan calibrate` (the profile is written beside the tables) last, so a short lease
still gets the measurements above. `--budget-s` skips what would start after that many seconds.

It writes `gpu_check.csv`, `gpu_decode.csv`, `saved_tensors.csv`, `gpu_check.md` and `profile.json` into --out (default
benchmarks/output/gpu_check/), after every row, so a run cut short keeps what it measured.

Without a GPU (or with --cpu) the training loop runs a tiny Llama-shaped model on the CPU in fp32:
the step time is measured but has no GPU estimate to compare with, and the peak is the live tensor
bytes the tracer counts, against the analytic peak.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

COLUMNS = ("device", "case", "model", "layers", "method", "precision", "framework", "optimizer", "grad_ckpt", "seq_len",
           "micro_batch",
           "quantizer", "status", "measured_step_s", "estimated_step_s", "estimated_step_calibrated_s", "step_error",
           "measured_allocated_bytes", "traced_peak_bytes", "estimated_peak_bytes", "allocated_error",
           "measured_reserved_bytes", "estimated_reserved_bytes", "reserved_error", "estimated_verdict",
           "traced_peak_op", "traced_breakdown", "notes")
DECODE_COLUMNS = ("device", "model", "batch", "prompt_len", "gen_len", "runtime", "status", "measured_tokens_per_s",
                  "estimated_tokens_per_s", "estimated_calibrated_tokens_per_s", "tokens_per_s_error",
                  "roofline_tokens_per_s", "measured_ttft_s", "estimated_ttft_s", "first_generate_tokens_per_s",
                  "launch_us", "sync_us")
SAVED_COLUMNS = ("where", "shape", "dtype", "count", "bytes")


def gpu_cases(quick: bool):
    """What a GPU of 80 GB or more runs, as (case, model cut to fewer layers or None): the common
    questions first (7B LoRA and QLoRA, a 1B model by every method), then (after decode) pure bf16 and
    autocast full fine-tuning of a 7B model, the second close to an H200's memory (does it fit?), the
    rest, and last a mixture of experts."""
    from costplan.verify import Case

    small = [Case(model="tinyllama-1.1b", method="full", seq_len=2048, micro_batch=4),
             Case(model="tinyllama-1.1b", method="lora", seq_len=2048, micro_batch=4),
             Case(model="tinyllama-1.1b", method="qlora", seq_len=2048, micro_batch=4),
             Case(model="tinyllama-1.1b", method="prompt", seq_len=2000, micro_batch=4),
             Case(model="gpt2", method="full", seq_len=1024, micro_batch=8)]
    large = [Case(model="llama-2-7b", method="lora", seq_len=2048, micro_batch=1),
             Case(model="llama-2-7b", method="qlora", seq_len=2048, micro_batch=1, grad_ckpt=True),
             Case(model="llama-2-7b", method="full", precision="bf16-true", seq_len=2048, micro_batch=1,
                  grad_ckpt=True),
             Case(model="llama-2-7b", method="full", seq_len=2048, micro_batch=1, grad_ckpt=True),
             Case(model="llama-3-8b", method="lora", seq_len=2048, micro_batch=2, grad_ckpt=True,
                  framework="torchtune"),
             Case(model="llama-2-7b", method="lora", seq_len=4096, micro_batch=4, grad_ckpt=True),
             Case(model="llama-2-7b", method="qlora", seq_len=2048, micro_batch=4)]
    # transformers' own MoE layers (gpt-oss: 32 experts, top-4, attention sinks), cut to 4 of 24 layers.
    moe = [(Case(model="gpt-oss-20b", method=key, precision="bf16-true", seq_len=4096, grad_ckpt=True),
            cut("gpt-oss-20b", 4)) for key in ("lora", "full")]
    if quick:
        return [(c, None) for c in (small[1], small[2], large[0], large[1])]
    return [*((c, None) for c in (large[0], large[1], *small[:4], *large[2:6], small[4], large[6])), *moe]


def cut(name: str, layers: int | None):
    """A preset with only its first ``layers`` layers (None: the preset as it is)."""
    from dataclasses import replace

    from costplan.model import resolve_model

    spec = resolve_model(name)
    return spec if layers is None else replace(spec, num_layers=layers, name=f"{spec.name} ({layers} layers)")


def cpu_cases():
    from costplan.model import ModelSpec
    from costplan.verify import Case

    tiny = ModelSpec(name="tiny-llama", family="llama", hidden_size=128, num_layers=2, num_heads=4, num_kv_heads=2,
                     head_dim=32, ffn_size=344, vocab_size=512, max_positions=256)
    return [(Case(model="tiny-llama", method=key, precision="fp32", seq_len=64, micro_batch=2), tiny)
            for key in ("full", "lora", "prompt")]


def saved_tensors(device: str, *, micro_batch: int = 8, seq_len: int = 1024) -> list[dict]:
    """The tensors autograd saves in the forward of GPT-2's first block under bf16 autocast, grouped by
    shape and dtype (each storage once; parameters left out): on a GPU as ``torch.autocast`` runs it, on
    the meta device as costplan's tracer emulates it (FlashAttention and the fused dropout routed as in
    ``trace_training_step``)."""
    import contextlib

    import torch

    from costplan.autocast import autocast_mode
    from costplan.tracing import _gpu_kernels, build_model

    spec = cut("gpt2", 1)
    block = build_model(spec, device=device).transformer.h[0]
    block.train()
    params = {p.untyped_storage()._cdata for p in block.parameters()}
    seen: dict[int, tuple[tuple[int, ...], str, int]] = {}

    def pack(t):
        key = t.untyped_storage()._cdata
        if key not in params and key not in seen:
            seen[key] = (tuple(t.shape), str(t.dtype).removeprefix("torch."), t.untyped_storage().nbytes())
        return t

    x = torch.randn(micro_batch, seq_len, spec.hidden_size, device=device, requires_grad=True) if device != "meta" \
        else torch.empty(micro_batch, seq_len, spec.hidden_size, device="meta", requires_grad=True)
    if device == "meta":
        cast = contextlib.ExitStack()
        cast.enter_context(_gpu_kernels("meta"))
        cast.enter_context(autocast_mode(torch.bfloat16))
    else:
        cast = torch.autocast(device, dtype=torch.bfloat16)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), cast:
        out = block(x)
    del out
    where = "meta (costplan's autocast emulation)" if device == "meta" else f"{device} (torch.autocast)"
    groups: dict[tuple, list[int]] = {}
    for shape, dtype, size in seen.values():
        groups.setdefault((shape, dtype), []).append(size)
    return [{"where": where, "shape": "x".join(map(str, shape)), "dtype": dtype, "count": len(sizes),
             "bytes": sum(sizes)} for (shape, dtype), sizes in sorted(groups.items(), key=lambda kv: -sum(kv[1]))]


def memory_estimates(analytic, memory_bytes: float | None) -> dict:
    """What costplan says of a step's memory (``verify.analytic_breakdown``) and the verdict for a card of
    ``memory_bytes``."""
    from costplan.fit import verdict as fit_verdict

    return {"estimated_peak_bytes": analytic.peak_bytes, "estimated_reserved_bytes": analytic.reserved_bytes,
            "estimated_verdict": fit_verdict(memory_bytes, analytic.device_bytes) if memory_bytes else ""}


def step_estimate(case, model, work, gpu_key: str, profile=None) -> float:
    """`estimate`'s step time on one GPU of the row ``gpu_key`` for the case as prepared: the same stack,
    optimizer, checkpointing and shape, eager as the check runs it."""
    import costplan

    est = costplan.estimate(model, case.method, gpu=gpu_key, gpus=1, micro_batch=work.micro_batch,
                            global_batch=work.micro_batch, seq_len=work.seq_len, grad_ckpt=case.grad_ckpt,
                            precision=work.precision, framework=case.framework, optimizer=work.optimizer,
                            loss=work.loss, runtime="eager", tokens=1e6, price=0.0, lora_rank=8,
                            lora_targets="q,v", lora_dropout=0.0, virtual_tokens=20, profile=profile)
    return float(est.step.total)


def case_of(row: dict):
    """The case a table row measured (its precision as resolved), and the model cut as it ran."""
    from costplan.verify import Case

    case = Case(model=row["model"], method=row["method"], precision=row["precision"],
                framework=row.get("framework") or None, grad_ckpt=str(row["grad_ckpt"]) == "True",
                seq_len=int(row["seq_len"]), micro_batch=int(row["micro_batch"]))
    layers = row.get("layers")
    return case, (cut(row["model"], int(layers)) if layers not in (None, "") else None)


def train_row(case, spec, *, gpu: bool, gpu_key: str | None, device_name: str, memory_bytes: float | None,
              steps: int) -> dict:
    import torch

    from costplan.tracing import trace_training_step
    from costplan.units import fmt_bytes
    from costplan.verify import _memory_checks, analytic_breakdown, prepare

    model, method, work, notes = prepare(case, spec)
    analytic = analytic_breakdown(model, method, work)
    quantizer = "bitsandbytes" if gpu and method.base_storage != "compute" else \
        ("stand-in" if method.base_storage != "compute" else "")
    row = {"device": device_name, "case": case.label + (f" ({spec.num_layers} layers)" if spec else ""),
           "model": case.model, "layers": spec.num_layers if spec else None, "method": case.method,
           "precision": work.precision, "framework": case.framework or "", "optimizer": work.optimizer,
           "grad_ckpt": case.grad_ckpt, "seq_len": work.seq_len, "micro_batch": work.micro_batch,
           "quantizer": quantizer, "notes": "; ".join(notes), **memory_estimates(analytic, memory_bytes)}
    if gpu_key is not None:
        row["estimated_step_s"] = step_estimate(case, model, work, gpu_key)
    traced = None
    try:
        traced = trace_training_step(model, method, work, device="cuda" if gpu else "cpu", measure_steps=steps,
                                     real_bitsandbytes=gpu, count_flops=not gpu)
    except torch.cuda.OutOfMemoryError:
        row["status"] = "out of memory"
        held = f"the allocator held {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB at most before it ran out"
        row["notes"] = "; ".join(filter(None, [row["notes"], held]))
    if gpu:  # outside the handler: the traceback's frames no longer hold the step's tensors
        import gc

        gc.collect()
        torch.cuda.empty_cache()
    if traced is None:
        return row
    # Where a gap comes from: the traced peak by category beside costplan's, and the operator at the peak.
    checks = _memory_checks(analytic, traced.peak_breakdown)
    breakdown = "; ".join(f"{c.quantity.removeprefix('memory: ')} {fmt_bytes(c.traced)} traced, "
                          f"{fmt_bytes(c.analytic)} costplan" for c in checks)
    row.update(status="ran", measured_step_s=traced.step_seconds, traced_peak_bytes=traced.peak_bytes,
               measured_allocated_bytes=traced.device_allocated_bytes if gpu else traced.peak_bytes,
               measured_reserved_bytes=traced.device_reserved_bytes, traced_peak_op=traced.peak_op,
               traced_breakdown=breakdown)
    return row


def decode_row(name: str, *, gpu_key: str, device_name: str, batch: int = 1, prompt_len: int = 128,
               gen_len: int = 256, device: str = "cuda", profile_to: Path | None = None) -> dict:
    import torch

    from costplan.hardware import gpu
    from costplan.memory import weight_bytes_per_param
    from costplan.model import count_params, preset
    from costplan.tracing import build_model

    spec = preset(name)
    module = build_model(spec, device=device, dtype=torch.bfloat16).eval()
    ids = torch.randint(0, spec.vocab_size, (batch, prompt_len), device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def generate(new: int) -> float:
        sync()
        t0 = time.perf_counter()
        with torch.no_grad():
            module.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new,
                            min_new_tokens=new, do_sample=False, pad_token_id=0)
        sync()
        return time.perf_counter() - t0

    # Warm-up over the whole length: each new attention length can build a new kernel plan (cuDNN's
    # attention on Hopper), which a server does once and a first generate does for every token.
    first = generate(gen_len)
    ttft = min(generate(1) for _ in range(3))
    total = generate(gen_len)
    probes = _host_probes(device) if device == "cuda" else {}
    if profile_to is not None:  # where a decode step's time goes, operator by operator
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            generate(16)
        profile_to.write_text(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))
    module = None  # free the weights before the next model is built
    if device == "cuda":
        torch.cuda.empty_cache()
    est = decode_estimate(spec, batch, prompt_len, gen_len, gpu_key)
    roofline = gpu(gpu_key).bandwidth_bytes_per_s / (count_params(spec).total * weight_bytes_per_param("bf16", 2))
    measured = batch * gen_len / total
    return {"device": device_name, "model": spec.name, "batch": batch, "prompt_len": prompt_len, "gen_len": gen_len,
            "runtime": "eager", "status": "ran", "measured_tokens_per_s": measured,
            "estimated_tokens_per_s": est.tokens_per_second,
            "tokens_per_s_error": est.tokens_per_second / measured - 1, "roofline_tokens_per_s": roofline,
            "measured_ttft_s": ttft, "estimated_ttft_s": est.time_to_first_token_seconds,
            "first_generate_tokens_per_s": batch * gen_len / first, **probes}


def _host_probes(device: str) -> dict:
    """What the host adds per operator and per synchronisation on this machine (a VM or sandbox can
    add much): the time of 2000 tiny kernels launched back to back, and of 200 launch-and-wait."""
    import torch

    x = torch.zeros(16, device=device)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(2000):
        x.add_(1)
    torch.cuda.synchronize()
    launch = (time.perf_counter() - t0) / 2000
    t0 = time.perf_counter()
    for _ in range(200):
        x.add_(1)
        torch.cuda.synchronize()
    return {"launch_us": launch * 1e6, "sync_us": ((time.perf_counter() - t0) / 200 - launch) * 1e6}


def _error(measured, estimated):
    if not measured or not estimated:
        return None
    return estimated / measured - 1


def run(*, cpu: bool, quick: bool, out: Path, budget_s: float = float("inf")) -> list[dict]:
    import torch

    from costplan.calibrate import describe_device, match_gpu_row
    from costplan.profile import load_profile

    started = time.perf_counter()
    gpu = torch.cuda.is_available() and not cpu
    out.mkdir(parents=True, exist_ok=True)
    device = describe_device() if gpu else {"kind": "cpu", "name": "CPU"}
    gpu_key = match_gpu_row(device) if gpu else None
    memory_bytes = torch.cuda.get_device_properties(0).total_memory if gpu else None
    print(f"device {device['name']} (costplan row {gpu_key}), torch {torch.__version__}", flush=True)
    rows: list[dict] = []
    decode: list[dict] = []

    def left() -> float:
        return budget_s - (time.perf_counter() - started)

    def train(case, spec) -> None:
        if left() <= 0:
            print(f"{case.label}: skipped, past the {budget_s:.0f} s budget", flush=True)
            return
        t0 = time.perf_counter()
        options = {"gpu": gpu, "gpu_key": gpu_key, "device_name": device["name"], "memory_bytes": memory_bytes,
                   "steps": steps}
        try:
            if gpu:  # a process of its own: the allocator's peaks are this case's, nothing is left behind
                row = _isolated("train", {"case": dataclasses.asdict(case), "layers": spec.num_layers if spec else None,
                                          **options}, timeout=max(left(), 60))
            else:
                row = train_row(case, spec, **options)
        except Exception as exc:  # a library missing or failing on this machine: say so, keep going
            traceback.print_exc()
            row = {"status": f"failed: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"}
        row = {"device": device["name"], "case": case.label, "model": case.model, "method": case.method, **row}
        _errors(row)
        rows.append({c: row.get(c) for c in COLUMNS})
        print(f"{case.label}: {row['status']} in {time.perf_counter() - t0:.1f} s", flush=True)
        write(rows, decode, out)

    cases = gpu_cases(quick) if gpu else cpu_cases()
    steps = (3 if quick else 5) if gpu else (1 if quick else 3)
    first = 6 if gpu and not quick else len(cases)  # the common questions, then decode, then the rest
    for case, spec in cases[:first]:
        train(case, spec)
    if gpu:
        for name in (["tinyllama-1.1b"] if quick else ["tinyllama-1.1b", "llama-2-7b"]):
            if left() <= 0:
                continue
            try:
                profile_to = str(out / "decode_profile.txt") if not decode else None
                decode.append(_isolated("decode", {"name": name, "gpu_key": gpu_key, "device_name": device["name"],
                                                   "profile_to": profile_to}, timeout=max(left(), 60)))
            except Exception as exc:
                traceback.print_exc()
                decode.append({"device": device["name"], "model": name,
                               "status": f"failed: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"})
            print(f"decode {name}: {decode[-1]['status']}", flush=True)
            write(rows, decode, out)
    for case, spec in cases[first:]:
        train(case, spec)
    saved = saved_tensors("meta")
    if gpu and left() > 0:
        try:
            saved = _isolated("saved", {}, timeout=max(left(), 60)).get("rows", []) + saved
        except Exception:
            traceback.print_exc()
    from costplan.files import write_atomically

    write_atomically(out / "saved_tensors.csv", _csv(saved, SAVED_COLUMNS))
    if gpu and left() > 0:
        t0 = time.perf_counter()
        try:
            _isolated("calibrate", {"quick": quick or left() < 150, "path": str(out / "profile.json")},
                      timeout=max(left(), 60))
            print(f"calibrated in {time.perf_counter() - t0:.1f} s", flush=True)
            _calibrated_estimates(rows, decode, load_profile(out / "profile.json"), gpu_key)
        except Exception:
            traceback.print_exc()
        write(rows, decode, out)
    return rows


def _isolated(kind: str, arguments: dict, timeout: float) -> dict:
    """Run one measurement in a fresh Python process (``--one``) and return the row it prints."""
    proc = subprocess.run([sys.executable, __file__, "--one", kind, json.dumps(arguments)], capture_output=True,
                          text=True, timeout=timeout)
    sys.stderr.write("".join(line + "\n" for line in proc.stderr.splitlines()
                             if "warn" not in line.lower())[-3000:])
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = " ".join(proc.stderr.strip().splitlines()[-1:])[:200]
        return {"status": f"failed (exit {proc.returncode}): {tail}"}
    return json.loads(lines[-1])


def _one(kind: str, arguments: dict) -> dict:
    """The child's side of ``_isolated``."""
    if kind == "train":
        from costplan.verify import Case

        case = Case(**arguments.pop("case"))
        return train_row(case, cut(case.model, arguments.pop("layers")), **arguments)
    if kind == "decode":
        profile_to = arguments.pop("profile_to")
        return decode_row(arguments.pop("name"), profile_to=Path(profile_to) if profile_to else None, **arguments)
    if kind == "saved":
        return {"rows": saved_tensors("cuda")}
    if kind == "calibrate":
        from costplan.calibrate import calibrate, write_json_atomically
        from costplan.model import preset

        write_json_atomically(calibrate(preset("tinyllama-1.1b"), quick=arguments["quick"]), Path(arguments["path"]))
        return {"status": "ran"}
    raise ValueError(f"unknown measurement {kind}")


def _calibrated_estimates(rows: list[dict], decode: list[dict], profile, gpu_key: str) -> None:
    """The step and decode times again, with the profile just measured in place of the shipped constants."""
    from costplan.verify import prepare

    for row in rows:
        if row.get("status") == "ran":
            case, spec = case_of(row)
            model, _, work, _ = prepare(case, spec)
            row["estimated_step_calibrated_s"] = step_estimate(case, model, work, gpu_key, profile)
    for row in decode:
        if row.get("status") == "ran":
            row["estimated_calibrated_tokens_per_s"] = _decode_estimate_of(row, gpu_key, profile).tokens_per_second


def decode_estimate(model, batch: int, prompt_len: int, gen_len: int, gpu_key: str, profile=None):
    """`estimate --method inference --runtime eager` for one GPU of the row ``gpu_key``."""
    import costplan

    return costplan.estimate(model, "inference", gpu=gpu_key, gpus=1, micro_batch=batch, prompt_len=prompt_len,
                             gen_len=gen_len, runtime="eager", price=0.0, profile=profile)


def _decode_estimate_of(row: dict, gpu_key: str, profile=None):
    return decode_estimate(row["model"], int(row["batch"]), int(row["prompt_len"]), int(row["gen_len"]), gpu_key,
                           profile)


def reestimate(out: Path) -> list[dict]:
    """Recompute every estimate of a finished run's tables with today's costplan (the measurements
    stay as measured), and the errors with them."""
    from costplan.calibrate import match_gpu_row
    from costplan.hardware import gpu
    from costplan.profile import load_profile
    from costplan.verify import analytic_breakdown, prepare

    def value(text: str):
        if text == "":
            return None
        try:
            return int(text)
        except ValueError:
            pass
        try:
            return float(text)
        except ValueError:
            return text

    def read(name: str) -> list[dict]:
        path = out / name
        return [{k: value(v) for k, v in r.items()} for r in csv.DictReader(path.open())] if path.is_file() else []

    rows, decode = read("gpu_check.csv"), read("gpu_decode.csv")
    gpu_key = match_gpu_row({"kind": "cuda", "name": rows[0]["device"]}) if rows else None
    memory = gpu(gpu_key).memory_bytes if gpu_key else None  # the table's card (the run kept torch's figure)
    for row in rows:
        case, spec = case_of(row)
        model, method, work, _ = prepare(case, spec)
        row["optimizer"] = work.optimizer
        row.update(memory_estimates(analytic_breakdown(model, method, work), memory))
        if gpu_key is not None:
            row["estimated_step_s"] = step_estimate(case, model, work, gpu_key)
        _errors(row)
    for row in decode:
        if row.get("status") in ("ran", "first generate only"):
            row["estimated_tokens_per_s"] = _decode_estimate_of(row, gpu_key).tokens_per_second
            row["tokens_per_s_error"] = _error(row.get("measured_tokens_per_s"), row["estimated_tokens_per_s"])
    if (out / "profile.json").is_file():
        _calibrated_estimates(rows, decode, load_profile(out / "profile.json"), gpu_key)
    write(rows, decode, out)
    return rows


def _errors(row: dict) -> None:
    row["step_error"] = _error(row.get("measured_step_s"), row.get("estimated_step_s"))
    row["allocated_error"] = _error(row.get("measured_allocated_bytes"), row.get("estimated_peak_bytes"))
    row["reserved_error"] = _error(row.get("measured_reserved_bytes"), row.get("estimated_reserved_bytes"))


def _csv(rows: list[dict], columns: tuple[str, ...]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows([{c: r.get(c) for c in columns} for r in rows])
    return buffer.getvalue()


def write(rows: list[dict], decode: list[dict], out: Path) -> None:
    from costplan.files import write_atomically

    write_atomically(out / "gpu_check.csv", _csv(rows, COLUMNS))
    if decode:
        write_atomically(out / "gpu_decode.csv", _csv(decode, DECODE_COLUMNS))

    lines = _markdown(rows, TRAIN_TABLE)
    if decode:
        lines += ["", *_markdown(decode, DECODE_TABLE)]
    device = rows[0]["device"] if rows else "?"
    write_atomically(out / "gpu_check.md", f"# GPU check on {device}\n\n" + "\n".join(lines) + "\n")


TRAIN_TABLE = (("case", "case", None), ("status", "status", None), ("step measured", "measured_step_s", "s"),
               ("step estimated", "estimated_step_s", "s"), ("error", "step_error", "e"),
               ("calibrated", "estimated_step_calibrated_s", "s"), ("allocated", "measured_allocated_bytes", "b"),
               ("traced", "traced_peak_bytes", "b"), ("estimated peak", "estimated_peak_bytes", "b"),
               ("error", "allocated_error", "e"), ("reserved", "measured_reserved_bytes", "b"),
               ("estimated reserved", "estimated_reserved_bytes", "b"), ("error", "reserved_error", "e"))
DECODE_TABLE = (("decode", "model", None), ("batch", "batch", None), ("prompt", "prompt_len", None),
                ("generated", "gen_len", None), ("status", "status", None),
                ("tokens/s measured", "measured_tokens_per_s", "t"), ("estimated", "estimated_tokens_per_s", "t"),
                ("error", "tokens_per_s_error", "e"), ("calibrated", "estimated_calibrated_tokens_per_s", "t"),
                ("roofline", "roofline_tokens_per_s", "t"), ("TTFT measured", "measured_ttft_s", "s"),
                ("estimated", "estimated_ttft_s", "s"), ("first generate", "first_generate_tokens_per_s", "t"))


def _markdown(rows: list[dict], table: tuple) -> list[str]:
    """A Markdown table of ``rows``: (header, key, unit) per column; units s (as ms), b (as GiB), e (a
    relative error), t (a rate), None (as written)."""
    def cell(value, unit) -> str:
        if value is None or value == "":
            return "-"
        if unit is None:
            return str(value)
        return {"s": f"{value * 1e3:.1f} ms", "b": f"{value / 2**30:.2f} GiB", "e": f"{value:+.1%}",
                "t": f"{value:.1f}"}[unit]

    return ["| " + " | ".join(header for header, _, _ in table) + " |", "|" + "---|" * len(table),
            *("| " + " | ".join(cell(r.get(key), unit) for _, key, unit in table) + " |" for r in rows)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="Run the CPU path even where a GPU is present.")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--budget-s", type=float, default=float("inf"),
                        help="Start nothing new after this many seconds (a device lease's length).")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "output" / "gpu_check")
    parser.add_argument("--one", nargs=2, metavar=("KIND", "JSON"), help=argparse.SUPPRESS)
    parser.add_argument("--reestimate", action="store_true",
                        help="Recompute the estimates of the tables already in --out (measured on a GPU earlier).")
    args = parser.parse_args()
    if args.reestimate:
        if not (args.out / "gpu_check.csv").is_file():
            print(f"There is no gpu_check.csv in {args.out} to re-estimate: run the check first.", file=sys.stderr)
            sys.exit(2)
        reestimate(args.out)
        print((args.out / "gpu_check.md").read_text())
        return
    if args.one:
        print(json.dumps(_one(args.one[0], json.loads(args.one[1]))))
        return
    rows = run(cpu=args.cpu, quick=args.quick, out=args.out, budget_s=args.budget_s)
    print((args.out / "gpu_check.md").read_text())
    print(json.dumps({"rows": len(rows)}))


if __name__ == "__main__":
    main()
