"""Every approach side by side for one model and workload: ``costplan compare``."""

from __future__ import annotations

from typing import Any

from costplan import arguments
from costplan.alternatives import cheapest_fit
from costplan.api import Estimate, estimate, make_method
from costplan.errors import CostplanError
from costplan.model import ModelSpec, resolve_model
from costplan.record import record
from costplan.units import fmt_count


def dataset_count(model: str, dataset: Any, seq_len: int | None, tokenizer: str | None) -> Any:
    """The dataset's tokens at ``seq_len`` (default: 2048 or the model's context), counted with
    ``tokenizer`` or the model's own (``compare`` and ``plan`` with ``--dataset``)."""
    from costplan.dataset import TokenCount, count_tokens

    seq = seq_len or min(2048, resolve_model(model).max_positions)
    if isinstance(dataset, TokenCount):
        return dataset.at(seq)
    return count_tokens(dataset, seq, tokenizer=tokenizer, model=model)


APPROACHES = ("inference", "prompt", "prefix", "lora", "qlora", "full", "cpt")


@record
class Comparison:
    estimates: tuple[Estimate, ...]
    notes: tuple[str, ...]
    serving: bool = False
    """Every row includes serving the same volume of generated tokens."""
    alternatives: tuple[Estimate | None, ...] = ()
    """Per row that does not fit: the same approach on the cheapest GPU type that holds it."""

    def alternative(self, est: Estimate) -> Estimate | None:
        for e, alt in zip(self.estimates, self.alternatives, strict=False):
            if e is est:
                return alt
        return None

    def total(self, est: Estimate) -> float | None:
        """What the row is compared on: its cost, plus serving when asked (like for like)."""
        return est.total_cost_usd if self.serving else est.cost_usd

    @property
    def cheapest_usd(self) -> float | None:
        costs = [c for c in (self.total(e) for e in self.estimates) if c is not None]
        return min(costs) if costs else None

    def relative_cost(self, est: Estimate) -> float | None:
        cheapest, cost = self.cheapest_usd, self.total(est)
        if cheapest is None or cost is None or cheapest == 0:
            return None
        return cost / cheapest

    @property
    def common_assumptions(self) -> tuple[str, ...]:
        """Assumptions every row shares (the rest are each row's own)."""
        first = self.estimates[0].assumptions
        return tuple(a for a in first if all(a in e.assumptions for e in self.estimates[1:]))

    def rows(self) -> list[dict[str, Any]]:
        rows = []
        for e in self.estimates:
            rows.append({
                "method": e.method.key, "params_trainable": e.params_trainable, "tokens": e.tokens * e.epochs,
                "memory_device_bytes": e.memory.device_bytes, "fits": e.placement.fits, "gpus": e.gpus,
                "wall_hours": e.wall_hours, "gpu_hours": e.gpu_hours, "cost_usd": e.cost_usd,
                "cost_usd_range": e.cost_usd_range, "energy_kwh": e.energy_kwh, "co2_kg": e.co2_kg,
                "relative_cost": self.relative_cost(e), "total_cost_usd": e.total_cost_usd,
                "fit_problem": e.placement.reason or None, "would_fit": would_fit(self.alternative(e)),
            })
        return rows

    def to_frame(self) -> Any:
        """The rows as a pandas DataFrame (``pip install 'costplan[data]'``)."""
        from costplan.frames import to_frame

        return to_frame(self.rows())


def compare(model: str, *, tokens: float | None = None, cpt_tokens: float | None = None,
            eval_tokens: float = 1e5, serve_tokens: float | None = None, serve_batch: int = 32,
            approaches: tuple[str, ...] = APPROACHES, dataset: Any = None, tokenizer: str | None = None,
            padding: str | None = None, **options: Any) -> Comparison:
    """Estimate each approach for the same model, GPU type and options.

    Fine-tuning approaches train on ``tokens``; continual pretraining on its own, larger budget
    (``cpt_tokens``, default 10B); inference-only (prompting) generates ``eval_tokens`` (default 100k:
    an evaluation or a pilot) at the same ``serve_batch`` concurrency serving uses. With
    ``serve_tokens`` every row adds the cost of serving that many generated tokens, the prompting
    row included, so the totals compare like for like. ``dataset`` (a path or a ``TokenCount``) gives
    the fine-tuning tokens instead of ``tokens``, in rows as ``padding`` says (``estimate``'s).
    """
    v = arguments.checked(arguments.COMPARE, dict(tokens=tokens, cpt_tokens=cpt_tokens, eval_tokens=eval_tokens,
                                                 serve_tokens=serve_tokens, serve_batch=serve_batch),
                          auto={"tokens", "cpt_tokens", "serve_tokens"})
    tokens, cpt_tokens, eval_tokens, serve_tokens = v["tokens"], v["cpt_tokens"], v["eval_tokens"], v["serve_tokens"]
    serve_batch = v["serve_batch"]
    if isinstance(approaches, str) or not approaches or any(a not in APPROACHES for a in approaches):
        raise CostplanError(f"approaches must be a list drawn from {', '.join(APPROACHES)}, not {approaches!r}.")
    dataset_notes: tuple[str, ...] = ()
    count = None
    if dataset is not None:
        count = dataset_count(model, dataset, options.get("seq_len"), tokenizer)
        dataset_notes = (count.describe(),)
    elif padding is not None:
        from costplan.dataset import NO_DATASET

        raise CostplanError(NO_DATASET)
    spec = model if isinstance(model, ModelSpec) else resolve_model(model)
    estimates: list[Estimate] = []
    alternatives: list[Estimate | None] = []
    skipped: list[str] = []
    for approach in approaches:
        reason = inapplicable(approach, spec)
        if reason:
            skipped.append(f"{approach} left out: {reason}")
            continue
        if approach == "inference":
            est = estimate(model, approach, tokens=eval_tokens, micro_batch=serve_batch, **options)
            if serve_tokens is not None:
                served = estimate(model, approach, tokens=serve_tokens, micro_batch=serve_batch, **options)
                from dataclasses import replace

                est = replace(est, serve=served)
        else:
            # The fine-tuning approaches train on the dataset's rows; CPT on its own corpus.
            volume = ({"tokens": cpt_tokens} if approach == "cpt" else {"tokens": tokens} if count is None
                      else {"dataset": count, "padding": padding})
            est = estimate(model, approach, **volume, serve_tokens=serve_tokens, serve_batch=serve_batch,
                           **options)
        estimates.append(est)
        alternatives.append(None if est.placement.fits else cheapest_fit(
            model, approach, **({"tokens": est.tokens, "micro_batch": serve_batch} if approach == "inference"
                                else volume),
            **{k: v for k, v in options.items() if k != "micro_batch"}))
    if not estimates:
        raise CostplanError(f"None of the approaches applies to {spec.name}: {'; '.join(skipped)}")
    notes = (
        *dataset_notes,
        f"tokens: {fmt_count(tokens) if tokens else 'the default 100 M'} to fine-tune (prompt, prefix, lora, qlora, "
        "full)",
        f"inference-only (prompting): generating {fmt_count(eval_tokens)} tokens, {serve_batch} requests at a time "
        "(no training)",
        "continual pretraining: its own token budget " + (f"{fmt_count(cpt_tokens)} tokens" if cpt_tokens
                                                         else "(10B default)"),
        "relative cost: " + ("training plus serving " if serve_tokens else "") + "dollars over the cheapest row "
        "that fits (a row that does not fit has no price)",
        *skipped,
    )
    return Comparison(tuple(estimates), notes, serving=serve_tokens is not None, alternatives=tuple(alternatives))


def inapplicable(approach: str, spec: ModelSpec) -> str | None:
    """Why an approach does not apply to the model at all (an encoder generates no text, MLA takes no
    prefix, T5 takes no prompt tuning or QLoRA), or None. Settings the user chose are not judged here."""
    try:
        make_method(approach).validate(spec)
    except CostplanError as err:
        return str(err).rstrip(".")
    return None


def would_fit(alt: Estimate | None) -> dict[str, Any] | None:
    """The JSON of an alternative that fits (base units)."""
    if alt is None:
        return None
    return {"gpu": alt.gpu.key, "gpus": alt.gpus, "wall_hours": alt.wall_hours, "gpu_hours": alt.gpu_hours,
            "cost_usd": alt.cost_usd}
