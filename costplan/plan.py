"""``costplan plan``: search GPU type x count x layout (micro-batch, checkpointing, ZeRO stage,
tensor and pipeline parallelism where the stack has them) x precision (x method variant) for the
configurations that fit, meet a deadline and a budget, and keep the Pareto front of dollars
against wall time.

The per-sequence memory terms and the step's shape depend only on (method, precision,
checkpointing); ``api.training_job`` builds them once per such combination, exactly as
``estimate`` does. Every (GPU, count, layout) is then evaluated at once by the engine's own
functions on numpy arrays, so a row of the plan and ``estimate`` with the same pinned layout give
the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import fields, replace
from typing import Any

from costplan import arguments, engine
from costplan import precision as modes
from costplan.api import PRECISIONS, make_method, run_goodput, stack_model, stack_workload, training_job
from costplan.energy import energy_model
from costplan.errors import CostplanError
from costplan.frameworks import FRAMEWORK_KEYS, default_framework, frameworks
from costplan.hardware import Ownership, gpu_names, hosts, offers, whole_instances
from costplan.hardware import gpu as find_gpu
from costplan.hardware import price as find_price
from costplan.layout import MAX_GPUS, default_global_batch, gpu_counts
from costplan.methods import Method
from costplan.model import ModelSpec, count_params, resolve_model
from costplan.profile import Profile, default_profile
from costplan.record import record
from costplan.scaling import link
from costplan.units import fmt_count

MICRO_BATCHES = (1, 2, 4, 8, 16, 32)
STARTUP_SECONDS = 600.0
"""Per run: provisioning, loading weights and data, warm-up (assumption). Without it a tiny job
would always spread over the most GPUs; with it, each GPU costs at least this much."""


@record
class Candidate:
    method: str
    gpu: str
    gpus: int
    micro_batch: int
    grad_ckpt: bool
    zero: int
    precision: str
    wall_seconds: float
    cost_usd: float
    device_bytes: float
    scaling_efficiency: float
    tp: int = 1
    pp: int = 1
    grad_accum: int = 1
    framework: str = "hf-trainer"
    provider: str = ""
    instance: str = ""
    usd_per_gpu_hour: float = 0.0

    @property
    def wall_hours(self) -> float:
        return self.wall_seconds / 3600


@record
class PlanResult:
    pareto: tuple[Candidate, ...]
    """Non-dominated in (cost, wall time), cheapest first."""
    evaluated: int
    fitting: int
    feasible: int
    """Fit and meet the deadline and budget."""
    notes: tuple[str, ...]
    samples: tuple[tuple[float, float], ...] = ()
    """(wall seconds, dollars) of up to a few thousand feasible configurations, for plotting."""
    skipped: tuple[str, ...] = ()
    """Method and precision combinations not searched, and why (no fp8 for a 4-bit base...)."""
    priced: int | None = None
    """Configurations that fit and have a price (None: not counted)."""

    def shown(self, rows: int = 15) -> tuple[Candidate, ...]:
        """The front thinned to ``rows`` evenly spread points, the cheapest and the fastest kept: what the
        CLI table and the report show (the JSON keeps every row)."""
        front = self.pareto
        if len(front) <= rows:
            return front
        picks = sorted({round(i * (len(front) - 1) / (rows - 1)) for i in range(rows)})
        return tuple(front[i] for i in picks)

    @property
    def cheapest(self) -> Candidate:
        return self.pareto[0]

    @property
    def fastest(self) -> Candidate:
        return self.pareto[-1]

    def rows(self) -> list[dict[str, Any]]:
        """The Pareto front, cheapest first, one flat row per configuration."""
        from dataclasses import asdict

        return [dict(asdict(c), wall_hours=c.wall_hours) for c in self.pareto]

    def to_frame(self) -> Any:
        """The Pareto front as a pandas DataFrame (``pip install 'costplan[data]'``)."""
        from costplan.frames import to_frame

        return to_frame(self.rows())


@record
class _Offers:
    """Per GPU type and count: the offer that rents that many most cheaply."""

    price: Any
    """$/GPU-hour, shape (types, counts); NaN where no offer can host the count."""
    billed: Any
    """GPUs billed per GPU used."""
    provider: list[list[str]]
    instance: list[list[str]]


def _offers(keys: list[str], counts: list[int], provider: str | None, spot: bool, override: float | None,
            owned: Ownership | None = None, watts: list[float] | None = None, pue: float = 1.0) -> _Offers:
    """The cheapest offer for every GPU type and count: ``hardware.price`` over the grid at once (whole
    instances billed, several only where the provider clusters them; ties to the provider, then the
    instance, alphabetically)."""
    import numpy as np

    usd = np.full((len(keys), len(counts)), np.nan)
    billed = np.ones_like(usd)
    providers = [[""] * len(counts) for _ in keys]
    instances = [[""] * len(counts) for _ in keys]
    n = np.asarray(counts, dtype=float)
    for i, key in enumerate(keys):
        if owned is not None or override is not None:  # one rate for any count, billed as used
            flat = find_price(key, provider, spot, override, owned=owned, watts=watts[i] if watts else 0.0, pue=pue)
            if flat is not None:
                usd[i, :] = flat.usd_per_gpu_hour
                providers[i], instances[i] = [flat.provider] * len(counts), [flat.instance] * len(counts)
            continue
        listed = sorted(offers(key, provider, spot), key=lambda o: (o.provider, o.instance))
        if not listed:
            continue
        per = np.array([[o.gpus_per_instance] for o in listed], dtype=float)
        paid = whole_instances(n, per)  # offers x counts
        cost = np.array([[o.usd_per_gpu_hour] for o in listed]) * paid
        cost = np.where(hosts(n, per, np.array([[o.cluster] for o in listed])), cost, np.inf)
        best = np.argmin(cost, axis=0)  # the first of equal costs: alphabetical, as price() breaks ties
        every = np.arange(len(counts))
        sold = np.isfinite(cost[best, every])
        usd[i, sold] = np.array([o.usd_per_gpu_hour for o in listed])[best[sold]]
        billed[i, sold] = paid[best, every][sold] / n[sold]
        names = np.array([o.provider for o in listed] + [""], dtype=object)
        kinds = np.array([o.instance for o in listed] + [""], dtype=object)
        chosen = np.where(sold, best, len(listed))  # the empty name where nobody sells that count
        providers[i], instances[i] = names[chosen].tolist(), kinds[chosen].tolist()
    return _Offers(usd, billed, providers, instances)


def search(
    model: str,
    methods: tuple[str, ...] = ("lora",),
    *,
    tokens: float | None = None,
    dataset: Any = None,
    padding: str | None = None,
    tokenizer: str | None = None,
    epochs: float = 1.0,
    deadline_seconds: float | None = None,
    budget_usd: float | None = None,
    gpus: tuple[str, ...] | None = None,
    max_gpus: int = 1024,
    precisions: tuple[str, ...] = ("bf16",),
    seq_len: int | None = None,
    global_batch: int | None = None,
    framework: str | None = None,
    provider: str | None = None,
    spot: bool = False,
    price: float | None = None,
    electricity: float | None = None,
    hardware_price: float | None = None,
    lora_rank: int = 8,
    lora_targets: str = "q,v",
    startup_seconds: float = STARTUP_SECONDS,
    profile: Profile | None = None,
    grad_ckpt: bool | None = None,
) -> PlanResult:
    """``grad_ckpt`` None searches activation checkpointing on and off; True or False pins it."""
    import numpy as np

    v = arguments.checked(arguments.PLAN, dict(
        tokens=tokens, epochs=epochs, deadline_seconds=deadline_seconds, budget_usd=budget_usd, max_gpus=max_gpus,
        seq_len=seq_len, global_batch=global_batch, price=price, lora_rank=lora_rank, startup_seconds=startup_seconds,
        electricity=electricity, hardware_price=hardware_price),
        auto={"tokens", "deadline_seconds", "budget_usd", "seq_len", "global_batch", "price", "electricity",
              "hardware_price"})
    tokens, epochs, deadline_seconds, budget_usd = v["tokens"], v["epochs"], v["deadline_seconds"], v["budget_usd"]
    max_gpus, seq_len, global_batch, price = v["max_gpus"], v["seq_len"], v["global_batch"], v["price"]
    lora_rank, startup_seconds = v["lora_rank"], v["startup_seconds"]
    electricity, hardware_price = v["electricity"], v["hardware_price"]
    methods = _names("method", methods)
    precisions = tuple(arguments.text("precision", p, PRECISIONS) for p in _names("precision", precisions))
    gpus = tuple(dict.fromkeys(find_gpu(g).key for g in _names("gpu", gpus))) if gpus is not None else None
    framework = arguments.text("framework", framework, FRAMEWORK_KEYS, optional=True)
    provider = arguments.text("provider", provider, optional=True)
    spot = arguments.flag("spot", spot)
    grad_ckpt = arguments.flag("grad_ckpt", grad_ckpt, optional=True)
    lora_targets = arguments.text("lora_targets", lora_targets)
    if profile is not None and not isinstance(profile, Profile):
        raise CostplanError(f"profile must be a costplan.profile.Profile, not {profile!r}.")
    spec = model if isinstance(model, ModelSpec) else resolve_model(model)
    dataset_notes: tuple[str, ...] = ()
    count = None
    if dataset is not None:
        from costplan.compare import dataset_count
        from costplan.dataset import PADDINGS

        if tokens is not None:
            raise CostplanError("give --tokens or --dataset, not both.")
        padding = arguments.text("padding", padding, PADDINGS, optional=True)
        count = dataset_count(model, dataset, seq_len, tokenizer)
        tokens, dataset_notes = float(count.tokens), (count.describe(),)
    elif padding is not None:
        from costplan.dataset import NO_DATASET

        raise CostplanError(NO_DATASET)
    if tokens is None:
        raise CostplanError("plan needs --tokens or --dataset.")
    profile = profile or default_profile()
    pue = energy_model().pue
    owned = None
    if electricity is not None or hardware_price is not None:
        owned = Ownership(hardware_usd_per_gpu_hour=hardware_price or 0.0, usd_per_kwh=electricity or 0.0)
    keys = list(gpus) if gpus else gpu_names()
    skipped: list[str] = []
    if owned is not None and owned.usd_per_kwh > 0:  # electricity needs the board power
        unpowered = [k for k in keys if not profile.board_watts(find_gpu(k))]
        keys = [k for k in keys if k not in unpowered]
        skipped += [f"{k}: no board power (TDP) is listed, so --electricity cannot price it" for k in unpowered]
    evaluated = fitting = feasible_count = priced = 0
    best: list[Candidate] = []
    samples: list[tuple[float, float]] = []
    rng = np.random.default_rng(0)
    batch_notes: set[str] = set()
    memo: dict = {}  # layouts and offers shared by the methods and precisions
    for method_key in methods:
        method = make_method(method_key, lora_rank=lora_rank, lora_targets=lora_targets)
        method.validate(spec)
        if not method.training:
            raise CostplanError("plan searches training configurations; use estimate for inference.")
        seq = seq_len or min(2048, spec.max_positions - method.virtual_tokens)
        rows = _rows(count, padding, method)
        if rows is not None:  # padded rows: memory is sized on the longest, the steps compute the padding
            seq = rows.row_len
            batch_notes.add(f"{method.key}: {rows.describe()}")
        source = None
        if spec.is_encoder_decoder:  # seq_len is the target; the source is T5's usual 512 tokens
            seq, source = seq_len or 128, 512
            batch_notes.add(f"{method.key}: encoder-decoder, {source} source and {seq} target tokens per example")
        if seq + method.virtual_tokens > spec.max_positions:
            raise CostplanError(f"{seq + method.virtual_tokens} positions exceed {spec.name}'s context of "
                                f"{spec.max_positions} tokens.")
        batch, batch_note = (global_batch, f"global batch {global_batch} sequences (given)") if global_batch else \
            default_global_batch(spec, method, seq)
        batch_notes.add(f"{method.key}: {batch_note}")
        stack = frameworks()[framework] if framework else default_framework(True, method.trains_base,
                                                                          method.key in ("pretrain", "cpt"))
        built, method, _ = stack_model(stack, spec, method)  # the model and adapters as the stack builds them
        for precision in precisions:
            if precision == "fp8" and method.base_storage != "compute":
                skipped.append(f"{method.key} at fp8: a quantized base is not trained in fp8")
                continue
            peak = modes.peak_key(modes.resolve(precision, stack.bf16))
            usable = [k for k in keys if peak in find_gpu(k).peak_flops]
            if not usable:
                if keys:
                    skipped.append(f"{method.key} at {precision}: none of the GPU types has a {peak} peak")
                continue
            grid = None
            for ckpt in (False, True) if grad_ckpt is None else (grad_ckpt,):
                if grid is None:  # the layouts and the GPUs' columns are the same with and without checkpointing
                    work, _ = stack_workload(stack, method, precision=precision, grad_ckpt=ckpt, seq_len=seq,
                                             micro_batch=1, source_len=source)
                    grid = _grid(built, method, stack, work, profile, usable, batch, max_gpus, provider, spot,
                                 price, owned, pue, memo)
                    if grid is None:
                        break
                else:
                    grid = replace(grid, parts=grid.job.parts(ckpt))
                computed = tokens * epochs if rows is None else _positions(rows, epochs)
                fits, seconds, cost, device, efficiency, layout = _evaluate(grid, computed, startup_seconds, pue,
                                                                            ckpt)
                feasible = fits & np.isfinite(cost)
                priced += int(feasible.sum())
                if deadline_seconds is not None:
                    feasible &= seconds <= deadline_seconds
                if budget_usd is not None:
                    feasible &= cost <= budget_usd
                evaluated += int(seconds.size)
                fitting += int(fits.sum())
                feasible_count += int(feasible.sum())
                chosen = np.flatnonzero(feasible)
                if chosen.size > 500:
                    chosen = rng.choice(chosen, 500, replace=False)
                samples += [(float(seconds[i]), float(cost[i])) for i in chosen]
                for i in np.flatnonzero(_pareto_mask(seconds, cost, feasible)):
                    g, j = int(layout["g"][i]), int(layout["j"][i])
                    best.append(Candidate(
                        method.key, grid.keys[g], int(layout["n"][i]), int(layout["mb"][i]), ckpt,
                        int(layout["zero"][i]), precision, float(seconds[i]), float(cost[i]), float(device[i]),
                        float(efficiency[i]), tp=int(layout["tp"][i]), pp=int(layout["pp"][i]),
                        grad_accum=int(layout["accum"][i]), framework=stack.key,
                        provider=grid.offers.provider[g][j], instance=grid.offers.instance[g][j],
                        usd_per_gpu_hour=float(grid.offers.price[g, j])))
    front = _front(best)
    notes = (
        *dataset_notes,
        f"{spec.name}, {fmt_count(count_params(spec).total)} parameters, {fmt_count(tokens)} tokens x {epochs:g} "
        f"epoch{'s' if epochs != 1 else ''}",
        *sorted(batch_notes),
        f"searched {len(keys)} GPU type(s) x counts 1 to {max_gpus} (whole nodes past one; several nodes only "
        "where a provider sells clusters of that GPU) x micro-batch x ZeRO stage x checkpointing"
        + (" x tensor/pipeline parallelism" if any(c.tp > 1 or c.pp > 1 for c in best) else "")
        + f" x {', '.join(precisions)}; at most one micro-batch of sequences per replica",
        f"{profile.describe()}; the same engine as `costplan estimate`",
        f"each run adds {startup_seconds / 60:g} min of start-up (provisioning, loading; assumption) to wall time "
        "and cost; "
        + (owned.describe(owned.hardware_usd_per_gpu_hour + owned.usd_per_kwh * owned.kwh_per_gpu_hour(1000, pue),
                          f"board power x PUE {pue:.2f} (per kW of board power)")
           if owned else "prices from the offer that rents each count most cheaply (whole instances)"),
        *skipped,
    )
    return PlanResult(tuple(front), evaluated, fitting, feasible_count, notes, tuple(samples), tuple(skipped),
                      priced)


@record
class _Grid:
    keys: list[str]
    hw: engine.Hardware
    constants: Any
    parts: Any
    layout: dict[str, Any]
    offers: _Offers
    correction: Any
    hidden: int
    allocator_slack: Any
    context_bytes: float
    goodput: float
    job: Any
    """The first GPU type's job: its per-sequence parts for either checkpointing choice."""


def _names(what: str, value: Any) -> tuple[str, ...]:
    """A comma list or a sequence of names, none empty."""
    items = value.split(",") if isinstance(value, str) else value
    if isinstance(items, (str, bytes)) or not isinstance(items, (list, tuple)) or not items:
        raise CostplanError(f"--{what} must be a name or a list of names, not {items!r}.")
    names = tuple(arguments.text(what, item).strip() for item in items)
    if not all(names):
        raise CostplanError(f"--{what} has an empty name.")
    return names


def _grid(spec, method, stack, work, profile, keys, batch, max_gpus, provider, spot, price, owned=None,
          pue=1.0, memo: dict | None = None) -> _Grid | None:
    """Every (GPU type, count, tp, pp, ZeRO, micro-batch) the stack supports, as flat arrays.
    ``memo`` (one per search) keeps the layouts and offers that the search's methods and precisions
    share, since they depend only on the GPUs, the stack and the global batch."""
    memo = {} if memo is None else memo
    counts = gpu_counts(1, min(max_gpus, MAX_GPUS))  # every count; the masks keep whole nodes past one
    jobs = []
    for key in keys:  # a GPU's hardware and constants serve every method at one precision
        known = memo.get(("job", key, work.precision, stack.key))
        job = training_job(spec, method, find_gpu(key), link(key), stack, work, profile, batch) if known is None \
            else replace(known, model=spec, method=method, work=work, global_batch=batch,
                         correction=profile.correction_factor(spec.name, method.key, key), _parts={})
        memo.setdefault(("job", key, work.precision, stack.key), job)
        jobs.append(job)
    parts = jobs[0].parts(work.grad_ckpt)
    per_node = tuple(j.link.gpus_per_node for j in jobs)
    shape = (tuple(keys), per_node, stack.tensor_parallel, stack.pipeline_parallel, tuple(stack.zero_stages), batch)
    if shape not in memo:
        memo[shape] = _layouts(spec, keys, counts, per_node, stack, batch, provider, spot, price, owned)
    layout = memo[shape]
    if layout is None:
        return None
    watts = tuple(job.hw.watts for job in jobs)
    if ("offers", tuple(keys), watts) not in memo:
        memo["offers", tuple(keys), watts] = _offers(keys, counts, provider, spot, price, owned, list(watts), pue)
    found = memo["offers", tuple(keys), watts]
    return _columns(spec, keys, jobs, parts, layout, found, profile, method)


def _layouts(spec, keys, counts, per_node, stack, batch, provider, spot, price, owned) -> dict[str, Any] | None:
    """The layout arrays (GPU type and count index, tp, pp, ZeRO stage, micro-batch, accumulation)
    that the stack supports and the global batch allows; None when there is none."""
    import numpy as np

    per_node = np.array(per_node)
    cluster = np.array([price is not None or owned is not None or any(o.cluster for o in offers(k, provider, spot))
                        for k in keys])
    tps = np.array([1, 2, 4, 8] if stack.tensor_parallel else [1])
    pps = np.array([1, 2, 4, 8, 16, 32] if stack.pipeline_parallel else [1])
    # The grid is built from the combinations each rule allows on its own (GPU type x count; tensor x
    # pipeline parallelism for the model), then crossed with ZeRO stages and micro-batches; the rules
    # that tie them together are applied last.
    g, j = (a.ravel() for a in np.meshgrid(np.arange(len(keys)), np.arange(len(counts)), indexing="ij"))
    n, gpn = np.array(counts)[j], per_node[g]
    placed = (n <= gpn) | ((n % gpn == 0) & cluster[g])  # several nodes only as whole nodes of a cluster
    g, j = g[placed], j[placed]
    tp, pp = (a.ravel() for a in np.meshgrid(tps, pps, indexing="ij"))
    split = (pp <= spec.num_layers) & (spec.num_heads % tp == 0) & (
        (spec.num_kv_heads % tp == 0) | (tp % spec.num_kv_heads == 0))
    tp, pp = tp[split], pp[split]
    a, b, zero, mb = (x.ravel() for x in np.meshgrid(np.arange(len(g)), np.arange(len(tp)),
                                                      np.array(stack.zero_stages), np.array(MICRO_BATCHES),
                                                      indexing="ij"))
    g, j, tp, pp = g[a], j[a], tp[b], pp[b]
    n, gpn = np.array(counts)[j], per_node[g]
    ok = (n % (tp * pp) == 0) & (tp <= gpn)
    ok &= (pp == 1) | (n > gpn)  # pipeline stages across nodes
    dp = np.maximum(n // (tp * pp), 1)
    ok &= (dp > 1) | (zero == 0)  # sharding over one replica changes nothing
    ok &= (dp * mb <= batch) | ((mb == 1) & (dp <= batch))  # no more sequences in flight than a global batch
    if not ok.any():
        return None
    keep = np.flatnonzero(ok)
    layout = {"g": g[keep], "j": j[keep], "n": n[keep], "tp": tp[keep], "pp": pp[keep], "zero": zero[keep],
              "mb": mb[keep]}
    layout["accum"] = np.maximum(1, np.ceil(batch / (layout["n"] // (layout["tp"] * layout["pp"]) * layout["mb"])))
    layout["per_node"] = per_node[layout["g"]]
    return layout


def _columns(spec, keys, jobs, parts, layout, found, profile, method) -> _Grid:
    """Each layout's GPU: its hardware, constants and calibration as columns beside the layouts."""
    import numpy as np

    gi, ji = layout["g"], layout["j"]

    def column(values: list[float]) -> Any:
        return np.array(values, dtype=float)[gi]

    hws = [job.hw for job in jobs]
    hw = engine.Hardware(
        memory_bytes=column([h.memory_bytes for h in hws]), peak=column([h.peak for h in hws]),
        peak_16bit=column([h.peak_16bit for h in hws]), bandwidth=column([h.bandwidth for h in hws]),
        gemm_efficiency=column([h.gemm_efficiency for h in hws]),
        attention_efficiency=column([h.attention_efficiency for h in hws]),
        intra_bytes_per_s=column([h.intra_bytes_per_s for h in hws]),
        node_bytes_per_s=column([h.node_bytes_per_s for h in hws]), gpus_per_node=layout["per_node"],
        low_precision_factor=column([h.low_precision_factor for h in hws]),
        host_link_bytes_per_s=column([h.host_link_bytes_per_s for h in hws]),
        usd_per_gpu_hour=found.price[gi, ji] * found.billed[gi, ji], watts=column([h.watts for h in hws]))
    first = jobs[0].constants
    constants = replace(first, bandwidth_efficiency=column([job.constants.bandwidth_efficiency for job in jobs]))
    return _Grid(keys, hw, constants, parts, layout, found, column([job.correction for job in jobs]),
                 spec.hidden_size, column([job.allocator_slack for job in jobs]), profile.cuda_context_bytes(),
                 run_goodput(method, profile), jobs[0])


def _rows(count: Any, padding: str | None, method: Method) -> Any:
    """The dataset's padded rows for ``method`` (None: packed, or no dataset): ``estimate``'s default,
    each micro-batch padded to its longest, except for pretraining and CPT, which pack."""
    if count is None:
        return None
    from costplan.dataset import Rows

    rows = Rows.of(count, padding, method.key)
    return None if rows.padding == "packed" else rows


def _positions(rows: Any, epochs: float) -> Callable[[Any, Any], Any]:
    """Positions computed over the run at each layout's micro-batch and gradient accumulation
    (``Rows.positions``; only ``grouped`` padding depends on the accumulation)."""
    import numpy as np

    def positions(micro_batch: Any, grad_accum: Any) -> Any:
        accum = grad_accum if rows.padding == "grouped" else np.ones_like(grad_accum)
        pairs, where = np.unique(np.stack([micro_batch, accum], axis=1), axis=0, return_inverse=True)
        return np.array([rows.positions(int(m), int(a)) * epochs for m, a in pairs])[where.reshape(-1)]

    return positions


def _evaluate(grid: _Grid, tokens: float | Callable[[Any, Any], Any], startup_seconds: float, pue: float,
              ckpt: bool) -> tuple[Any, ...]:
    """``tokens``: computed over the run, or a function of the micro-batch and gradient accumulation
    (padded rows)."""
    import numpy as np

    lay = grid.layout
    n, tp, pp, zero, mb, accum = lay["n"], lay["tp"], lay["pp"], lay["zero"], lay["mb"], lay["accum"]
    dp = n // (tp * pp)
    parts = grid.parts
    phases = engine.training_phases(parts.memory, dp=dp, zero=zero, micro_batch=mb, grad_accum=accum, tp=tp, pp=pp)
    device = engine.device_bytes(engine.peak_bytes(phases), grid.allocator_slack, grid.context_bytes)
    fits = device <= grid.hw.memory_bytes
    # Memory decides a layout that does not fit; only the others are timed and priced.
    seconds, cost, efficiency = (np.full(n.shape, value) for value in (np.inf, np.inf, np.nan))
    kept = np.flatnonzero(fits)
    if kept.size:
        hw = engine.Hardware(**{f: getattr(grid.hw, f)[kept] for f in _HARDWARE_COLUMNS})
        constants = replace(grid.constants, bandwidth_efficiency=grid.constants.bandwidth_efficiency[kept])
        step = engine.training_step(parts.shape, parts.memory, hw=hw, constants=constants, dp=dp[kept], tp=tp[kept],
                                    pp=pp[kept], zero=zero[kept], micro_batch=mb[kept], grad_accum=accum[kept],
                                    hidden_size=grid.hidden, correction=grid.correction[kept])
        result = engine.throughput(step, parts.shape, gpus=n[kept], hw=hw,
                                   tokens=tokens(mb[kept], accum[kept]) if callable(tokens) else tokens,
                                   startup_seconds=startup_seconds, pue=pue, goodput=grid.goodput)
        seconds[kept] = result.wall_seconds
        cost[kept] = np.where(np.isfinite(result.cost_usd), result.cost_usd, np.inf)
        efficiency[kept] = step.scaling_efficiency
    return fits, seconds, cost, device, efficiency, lay


_HARDWARE_COLUMNS = tuple(f.name for f in fields(engine.Hardware))


def _pareto_mask(seconds: Any, cost: Any, feasible: Any) -> Any:
    """Feasible points not dominated by another feasible point of the same batch."""
    import numpy as np

    mask = np.zeros_like(feasible)
    idx = np.flatnonzero(feasible)
    if idx.size == 0:
        return mask
    order = idx[np.lexsort((seconds[idx], cost[idx]))]  # by cost, then time
    fastest_so_far = math.inf
    for i in order:
        if seconds[i] < fastest_so_far:
            mask[i] = True
            fastest_so_far = seconds[i]
    return mask


def _front(candidates: list[Candidate]) -> list[Candidate]:
    """The non-dominated set over all batches, cheapest first (and so slowest first)."""
    front: list[Candidate] = []
    for c in sorted(candidates, key=lambda c: (c.cost_usd, c.wall_seconds)):
        if not front or c.wall_seconds < front[-1].wall_seconds:
            front.append(c)
    return front
