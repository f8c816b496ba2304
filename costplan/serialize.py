"""The JSON answers (``--json``, the web API): one function per result, base units throughout."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from costplan.api import Estimate

SCHEMA_VERSION = 2
"""2: enum keys in ``memory_breakdown``/``flops_breakdown`` (labels in ``*_labels``), ``mfu`` on model
FLOPs with ``hfu`` beside it, ``layout``; ``memory_breakdown_v1`` keeps schema 1's labelled keys for
one version."""


def estimate_dict(est: Estimate) -> dict[str, Any]:
    mem = est.memory
    layout = est.placement.layout
    result: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "model": est.model.name,
        "method": est.method.key,
        "gpu": est.gpu.key,
        "framework": est.framework.key,
        "precision": est.workload.precision,
        "params_total": est.params_total,
        "params_active": est.params_active,
        "params_trainable": est.params_trainable,
        "tokens": est.tokens,
        "epochs": est.epochs,
        "flops_per_token": est.flops.per_token,
        "flops_breakdown": {t.part.value: {"forward": t.forward, "backward_input": t.backward_input,
                                           "backward_weight": t.backward_weight, "recompute": t.recompute}
                            for t in est.flops.terms},
        "flops_total": est.flops_total,
        "memory_peak_bytes": mem.peak_bytes,
        "memory_reserved_bytes": mem.reserved_bytes,
        "memory_device_bytes": mem.device_bytes,
        "memory_managed_bytes": mem.managed_bytes,
        "host_memory_bytes": mem.host_bytes,
        "optimizer": est.workload.optimizer,
        "optimizer_in_backward": est.workload.optimizer_in_backward,
        "loss": est.workload.loss,
        "offload": list(est.workload.offload),
        "memory_breakdown": {term.value: value for term, value in mem.terms.items()},
        "memory_breakdown_v1": {term.label: value for term, value in mem.terms.items()},
        "memory_peak_phase": mem.peak_phase.value,
        "memory_phases": {phase.value: value for phase, value in mem.phases.items()},
        "gpu_memory_bytes": est.gpu.memory_bytes,
        "fits": est.placement.fits,
        "fit_problem": est.placement.reason or None,
        "fit": est.fit.to_dict() if est.fit is not None else None,
        "savings": dict(est.fit.savings) if est.fit is not None else {},
        "gpus": est.gpus,
        "layout": {"gpus": layout.gpus, "tp": layout.tp, "pp": layout.pp, "cp": layout.cp, "dp": layout.dp,
                   "zero": layout.zero,
                   "micro_batch": layout.micro_batch, "grad_accum": layout.grad_accum,
                   "grad_ckpt": layout.grad_ckpt, "global_batch": est.global_batch,
                   "why": list(est.placement.why)},
        "zero_stage": layout.zero,
        "grad_accumulation": layout.grad_accum,
        "mfu": est.mfu,
        "hfu": est.hfu,
        "tokens_per_second": est.tokens_per_second,
        "wall_seconds": est.wall_seconds,
        "wall_hours": est.wall_hours,
        "gpu_hours": est.gpu_hours,
        "billed_gpus": est.billed_gpus,
        "usd_per_gpu_hour": None if est.price is None else est.price.usd_per_gpu_hour,
        "offer": None if est.price is None else {"provider": est.price.provider, "instance": est.price.instance,
                                                 "gpus_per_instance": est.price.gpus_per_instance,
                                                 "spot": est.price.spot, "as_of": est.price.as_of},
        "cost_usd": est.cost_usd,
        "energy_kwh": est.energy_kwh,
        "co2_kg": est.co2_kg,
        "scaling_efficiency": est.scaling_efficiency,
        "wall_hours_range": [t / 3600 for t in est.wall_seconds_range],
        "cost_usd_range": None if est.cost_usd_range is None else list(est.cost_usd_range),
        "assumptions": list(est.assumptions),
    }
    if est.step is not None:
        result["step_seconds"] = {"total": float(est.step.total), "compute": float(est.step.compute),
                                  "tensor_parallel": float(est.step.tensor_parallel),
                                  "pipeline_bubble": float(est.step.pipeline_bubble),
                                  "data_parallel_exposed": float(est.step.data_parallel),
                                  "optimizer": float(est.step.optimizer)}
    if est.serve is not None:
        result["serve"] = estimate_dict(est.serve)
        result["total_cost_usd"] = est.total_cost_usd
    if est.maximum is not None:
        result["max"] = dict(est.maximum)
    if est.kv_budget is not None:
        result["kv_budget"] = dict(est.kv_budget)
    if not est.method.training:
        result["cost_usd_per_million_tokens"] = est.cost_usd_per_million_tokens
        result["latency_seconds"] = est.latency_seconds
        result["time_to_first_token_seconds"] = est.time_to_first_token_seconds
    return result


def dumps(data: Any) -> str:
    """JSON text; a NaN or infinity anywhere is a bug, refused rather than printed as invalid JSON."""
    import json

    return json.dumps(data, indent=2, allow_nan=False, default=str)


def compare_dict(result: Any) -> dict[str, Any]:
    return {"schema_version": SCHEMA_VERSION, "rows": result.rows(), "notes": list(result.notes),
            "assumptions": {e.method.key: list(e.assumptions) for e in result.estimates}}


def plan_dict(result: Any, deadline: str | None = None, budget: float | None = None) -> dict[str, Any]:
    from dataclasses import asdict

    rows = [asdict(c) for c in result.pareto]
    data: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "feasible": bool(rows), "rows": rows,
                            "evaluated": result.evaluated, "fitting": result.fitting,
                            "feasible_count": result.feasible, "notes": list(result.notes)}
    if not rows:
        data["why"] = plan_why(result, deadline, budget)
    return data


def plan_why(result: Any, deadline: str | None, budget: float | None) -> str:
    """Why nothing is feasible, in one sentence."""
    if result.evaluated == 0 and result.skipped:
        precision = any("--electricity" not in reason for reason in result.skipped)
        return (f"Nothing could be searched: {'; '.join(result.skipped)}. "
                + ("Choose another --precision (fp16 on GPUs without bf16) or other GPU types." if precision else
                   "Choose other GPU types."))
    if result.fitting == 0:
        return (f"No configuration fits in memory ({result.evaluated:,} evaluated); allow more GPUs with --max-gpus, "
                "a larger GPU type, a shorter --seq-len or a frugal method (qlora).")
    if result.priced == 0:
        return (f"No price is listed for the GPU counts that fit ({result.fitting:,} of {result.evaluated:,} "
                "configurations fit in memory): pass --price (dollars per GPU-hour), --provider with another "
                "provider, or other GPU types.")
    wanted = " and ".join(filter(None, [f"a {deadline} deadline" if deadline else "",
                                        f"a ${budget:,.0f} budget" if budget else ""])) or "the constraints"
    return (f"No configuration meets {wanted} ({result.fitting:,} of {result.evaluated:,} configurations fit in "
            "memory); relax the deadline or budget, or allow more GPUs with --max-gpus.")


def cram_dict(result: Any) -> dict[str, Any]:
    seconds = result.hours * 3600
    return {
        "schema_version": SCHEMA_VERSION, "gpu": result.gpu, "hours": result.hours,
        "compute_flops": result.compute_flops, "optimal_params": result.optimal_params,
        "optimal_tokens": result.optimal_tokens,
        "largest_fitting_params": result.largest_fitting.params if result.largest_fitting else None,
        "options": [{"model": o.model.name, "params": o.params, "fits": o.fits, "grad_ckpt": o.grad_ckpt,
                     "tokens_per_second": o.tokens_per_second, "tokens_in_budget": o.tokens_in_budget,
                     "mfu": o.mfu, "finishes_compute_optimal": o.finishes} for o in result.options],
        "approaches": [{"method": e.method.key, "fits": e.placement.fits, "grad_ckpt": e.workload.grad_ckpt,
                        "tokens_per_second": e.tokens_per_second if e.placement.fits else 0.0,
                        "tokens_in_budget": e.tokens_per_second * seconds if e.placement.fits else 0.0,
                        "epochs": e.tokens_per_second * seconds / result.dataset_tokens if e.placement.fits else 0.0}
                       for e in result.approaches],
        "model_seq_len": result.model_seq_len,
        "encoder": [{"mlm_head_on": "masked positions" if r.estimate.method.predicted_fraction < 1 else
                     "every position", "masking": r.estimate.method.masking, "seq_len": r.estimate.workload.seq_len,
                     "fits": r.fits, "tokens_per_second": r.estimate.tokens_per_second if r.fits else 0.0,
                     "mfu": r.estimate.mfu, "tokens_in_budget": r.tokens_in_budget,
                     "steps_of_published_batch": r.cramming_steps} for r in result.encoder],
        "cramming_published": _published(),
        "notes": list(result.notes),
    }


def _published() -> dict[str, Any]:
    from dataclasses import asdict

    from costplan.cram import CRAMMING

    return dict(asdict(CRAMMING), batch_tokens=CRAMMING.batch_tokens)


def validate_dict(results: Any, summary: Any, skipped: Any, stacks: Any = ()) -> dict[str, Any]:
    from dataclasses import asdict

    return {"schema_version": SCHEMA_VERSION, "rows": [dict(asdict(r), error=r.error) for r in results],
            "summary": [asdict(s) for s in summary],
            "by_stack": [dict(asdict(s), stack=s.split) for s in stacks],
            "skipped": [asdict(s) for s in skipped]}
