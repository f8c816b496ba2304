"""How many tokens a dataset holds, and what padding wastes against packing (``costplan tokens``).

Files: JSON Lines (``.jsonl``, or a ``.json`` list of records), Parquet (``.parquet``, through
pyarrow) and plain text (``.txt``, ``.md``; one sequence per non-empty line, as the ``datasets``
library's text loader reads them); a folder is read whole, file by file in name order. A record's
text is its ``text`` field; else the contents of its ``messages``/``conversations`` turns; else
prompt/completion or Alpaca's instruction/input/output; else every string field, joined.

Tokens are counted with the model's tokenizer (``tokenizer.json`` from a local folder or the Hugging
Face cache, through the ``tokenizers`` library, special tokens included) when one is found;
otherwise estimated at ``BYTES_PER_TOKEN`` UTF-8 bytes per token, and said so with its error.

At a sequence length L, **padding** puts each sequence in its own row of L (longer ones truncated):
rows x L positions computed for the tokens kept. **Packing** concatenates everything into
ceil(tokens / L) full rows: only the last row is partly empty. What the collators of the stacks do
by default (transformers' ``DataCollatorWithPadding`` and ``DataCollatorForSeq2Seq``, TRL's SFT
collator, torchtune's ``padded_collate``, LitGPT's ``get_sft_collate_fn``) lies between: each
micro-batch is padded to its own longest sequence (``Rows``, ``--padding longest``).
"""

from __future__ import annotations

import collections
import json
import math
from array import array
from collections.abc import Callable, Iterator
from dataclasses import field, replace
from pathlib import Path
from typing import Any

from costplan.errors import CostplanError
from costplan.record import record

BYTES_PER_TOKEN = 4.0
"""UTF-8 bytes per token without a tokenizer: the common rule of thumb for English with BPE
vocabularies of 32K-128K entries ("about 4 characters per token", OpenAI's tokenizer guide)."""
ESTIMATE_ERROR = 0.25
"""Stated relative error of that rule on English prose (an assumption, not measured here); code,
numbers and non-Latin scripts fall far outside it (CJK text runs near one token per character)."""

TEXT_SUFFIXES = (".txt", ".md", ".text")
JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")
PARQUET_SUFFIXES = (".parquet",)
SUFFIXES = TEXT_SUFFIXES + JSON_SUFFIXES + PARQUET_SUFFIXES
BATCH = 1024
"""Texts tokenized at once."""


@record
class FileCount:
    path: str
    format: str
    sequences: int
    tokens: int
    bytes: int


@record
class TokenCount:
    """A dataset's tokens, and the rows it fills at ``seq_len`` padded or packed."""

    files: tuple[FileCount, ...]
    seq_len: int
    counted_with: str
    exact: bool
    """Counted with a tokenizer (True) or estimated from bytes (False)."""
    lengths: array = field(repr=False, compare=False)
    """Tokens of every sequence (4 bytes each), so the padding at another length needs no recount."""

    def at(self, seq_len: int) -> TokenCount:
        """The same count, padded or packed at ``seq_len``."""
        return replace(self, seq_len=seq_len)

    @property
    def longest(self) -> int:
        return max(self.lengths, default=0)

    @property
    def truncated(self) -> int:
        """Sequences longer than ``seq_len``."""
        return sum(1 for n in self.lengths if n > self.seq_len)

    @property
    def kept_when_padded(self) -> int:
        """Tokens left after truncating every sequence to ``seq_len``."""
        return sum(min(n, self.seq_len) for n in self.lengths)

    def expected_longest(self, micro_batch: int) -> float:
        """The expected longest sequence (truncated to ``seq_len``) of ``micro_batch`` drawn at random:
        the length a micro-batch is padded to. With F the share of sequences no longer than v,
        E[max] = sum over the lengths v of v (F(v)^m - F(v-)^m)."""
        return _expected_longest(_length_shares(self.lengths, self.seq_len), micro_batch)

    @property
    def tokens(self) -> int:
        return sum(f.tokens for f in self.files)

    @property
    def sequences(self) -> int:
        return sum(f.sequences for f in self.files)

    @property
    def bytes(self) -> int:
        return sum(f.bytes for f in self.files)

    @property
    def padded_positions(self) -> int:
        return self.sequences * self.seq_len

    @property
    def padding_waste(self) -> float:
        """Share of the padded positions that hold padding."""
        return 1 - self.kept_when_padded / self.padded_positions if self.padded_positions else 0.0

    @property
    def packed_rows(self) -> int:
        return math.ceil(self.tokens / self.seq_len)

    @property
    def packing_waste(self) -> float:
        rows = self.packed_rows
        return 1 - self.tokens / (rows * self.seq_len) if rows else 0.0

    @property
    def error(self) -> float:
        """Relative error of the count: 0 with a tokenizer."""
        return 0.0 if self.exact else ESTIMATE_ERROR

    def rows(self) -> list[dict[str, Any]]:
        """One row per file, then the total (``--csv``, ``to_frame``)."""
        per_file = [{"path": f.path, "format": f.format, "sequences": f.sequences, "tokens": f.tokens,
                     "bytes": f.bytes} for f in self.files]
        total = {"path": "(total)", "format": "", "sequences": self.sequences, "tokens": self.tokens,
                 "bytes": self.bytes, "seq_len": self.seq_len, "exact": self.exact, "error": self.error,
                 "longest": self.longest, "truncated": self.truncated, "padded_positions": self.padded_positions,
                 "padding_waste": self.padding_waste, "packed_rows": self.packed_rows,
                 "packing_waste": self.packing_waste, "counted_with": self.counted_with}
        return [*per_file, total]

    def to_dict(self, grad_accum: int = 1) -> dict[str, Any]:
        rows = self.rows()
        return {**rows[-1], "files": rows[:-1], "micro_batch_padding": self.micro_batch_padding(grad_accum)}

    def micro_batch_padding(self, grad_accum: int = 1) -> list[dict[str, Any]]:
        """What padding each micro-batch to its longest costs at micro-batches 1, 2, 4, ... 64 (up to the
        sequences): drawn at random (``--padding longest``) and grouped by length as the Trainer's
        ``group_by_length`` does with ``grad_accum`` accumulation steps (``--padding grouped``)."""
        if not self.sequences:
            return []
        longest, grouped = Rows(self, "longest"), Rows(self, "grouped")
        kept = self.kept_when_padded
        table = []
        for micro_batch in (m for m in (1, 2, 4, 8, 16, 32, 64) if m <= self.sequences):
            at = {"micro_batch": micro_batch, "grad_accum": grad_accum}
            for rows in (longest, grouped):
                positions = rows.positions(micro_batch, grad_accum)
                at[f"{rows.padding}_positions"] = positions
                at[f"{rows.padding}_padding"] = 1 - kept / positions if positions else 0.0
            table.append(at)
        return table

    def describe(self) -> str:
        """One line for an estimate's assumptions."""
        how = self.counted_with if self.exact else f"{self.counted_with} (±{self.error:.0%})"
        return (f"dataset: {self.tokens:,} tokens in {self.sequences:,} sequences ({len(self.files)} file(s); {how}); "
                f"packed at {self.seq_len} that is {self.packed_rows:,} rows; padded instead, "
                f"{self.padding_waste:.0%} of the computed positions would be padding")


def _length_shares(lengths: array, seq_len: int) -> tuple[tuple[int, float], ...]:
    """Each distinct length (truncated to ``seq_len``), ascending, with the share of sequences no
    longer than it."""
    counts = collections.Counter(lengths)
    total, running, shares = len(lengths), 0, []
    for length in sorted(counts):
        if length >= seq_len:  # this one and every longer one are truncated to seq_len
            shares.append((seq_len, 1.0))
            break
        running += counts[length]
        shares.append((length, running / total))
    return tuple(shares)


def _expected_longest(shares: tuple[tuple[int, float], ...], micro_batch: int) -> float:
    """E[max] of ``micro_batch`` lengths drawn from the distribution ``shares`` (``_length_shares``)."""
    if micro_batch < 1:
        raise ValueError("micro_batch must be at least 1")
    expected, below = 0.0, 0.0
    for length, share in shares:
        expected += length * (share ** micro_batch - below ** micro_batch)
        below = share
    return expected


PADDINGS = ("longest", "grouped", "max", "packed")
"""How training rows are filled: each micro-batch padded to its longest sequence (the stacks'
collators), the same over length-grouped micro-batches (the Hugging Face Trainer's
``group_by_length``, ``train_sampling_strategy="group_by_length"`` in transformers 5), every
sequence padded to ``seq_len`` (axolotl's ``pad_to_sequence_len``, tokenizers'
``padding="max_length"``), or packed (TRL ``packing``, axolotl ``sample_packing``, torchtune
``packed``, and every pretraining loader)."""


NO_DATASET = ("--padding applies to the sequences of a --dataset; without one, every sequence is --seq-len "
              "tokens.")

MEGABATCH_MULT = 50
"""Micro-batches of the sampler's batch in one length-sorted megabatch: transformers'
``get_length_grouped_indices`` takes ``min(sequences // (4 x batch), 50)``, at least 1."""
GROUPED_DRAWS = 4
"""Shuffles of the dataset averaged for ``grouped`` (fixed seeds 0..3, so the figure is repeatable)."""


def _megabatch(sequences: int, micro_batch: int, grad_accum: int) -> int:
    """Sequences in one of ``LengthGroupedSampler``'s length-sorted megabatches."""
    batch = micro_batch * grad_accum
    return max(1, min(sequences // (4 * batch), MEGABATCH_MULT)) * batch


def _grouped_positions(lengths: Any, micro_batch: int, grad_accum: int) -> float:
    """Positions an epoch when the Hugging Face Trainer groups by length (``group_by_length``), run as
    ``LengthGroupedSampler`` runs: the sequences shuffled, cut into megabatches of
    ``mult x micro_batch x grad_accum`` (the Trainer's sampler batch is ``train_batch_size x
    gradient_accumulation_steps``), each sorted longest first and cut into micro-batches of
    ``micro_batch`` consecutive sequences, each padded to its first (longest). ``lengths``: a numpy
    array already truncated to ``seq_len``. The mean over ``GROUPED_DRAWS`` shuffles; the sampler's
    swap that puts the longest megabatch first is left out (it moves one sequence)."""
    import numpy as np

    n = len(lengths)
    mega = _megabatch(n, micro_batch, grad_accum)
    full = n // mega * mega
    total = 0.0
    for seed in range(GROUPED_DRAWS):
        shuffled = lengths[np.random.default_rng(seed).permutation(n)]
        blocks = -np.sort(-shuffled[:full].reshape(-1, mega), axis=1)  # each megabatch, longest first
        total += float(blocks[:, ::micro_batch].sum()) * micro_batch  # mega is a multiple of micro_batch
        rest = -np.sort(-shuffled[full:])
        firsts = rest[::micro_batch]
        sizes = np.minimum(micro_batch, len(rest) - np.arange(0, len(rest), micro_batch))
        total += float((firsts * sizes).sum())
    return total / GROUPED_DRAWS


@record
class Rows:
    """A counted dataset as training rows: the positions computed per epoch and the longest row."""

    count: TokenCount
    padding: str
    shares: tuple[tuple[int, float], ...] = field(init=False, repr=False, compare=False)
    """The length distribution, counted once for every micro-batch asked about (``longest``)."""
    memo: dict[tuple[int, int], float] = field(init=False, repr=False, compare=False)
    """Positions already simulated per (micro-batch, gradient accumulation) (``grouped``)."""

    @classmethod
    def of(cls, count: TokenCount, padding: str | None, method_key: str) -> Rows:
        """``padding`` as given, else the default for the method: packed for pretraining and CPT,
        each micro-batch padded to its longest for fine-tuning."""
        return cls(count, padding or ("packed" if method_key in ("pretrain", "cpt") else "longest"))

    def __post_init__(self) -> None:
        if self.padding not in PADDINGS:
            raise CostplanError(f"--padding takes {', '.join(PADDINGS)}, not {self.padding!r}.")
        self.shares = _length_shares(self.count.lengths, self.count.seq_len) if self.padding == "longest" else ()
        self.memo = {}

    @property
    def row_len(self) -> int:
        """Positions in the longest row, on which memory is sized: the longest kept sequence when each
        micro-batch is padded to its own longest, else ``seq_len``."""
        if self.padding in ("longest", "grouped"):
            return max(1, min(self.count.longest, self.count.seq_len))
        return self.count.seq_len

    def positions(self, micro_batch: int, grad_accum: int = 1) -> float:
        """Positions computed in one epoch at ``micro_batch`` sequences a micro-batch: the tokens when
        packed, sequences x ``seq_len`` padded to it, sequences x the expected longest of a
        micro-batch padded to that (random micro-batches), or as the Trainer's length-grouped
        sampler cuts them (``grouped``, which also depends on ``grad_accum``)."""
        if self.padding == "packed":
            return float(self.count.tokens)
        if self.padding == "max":
            return float(self.count.padded_positions)
        if self.padding == "longest":
            return self.count.sequences * _expected_longest(self.shares, micro_batch)
        key = (micro_batch, grad_accum)
        if key not in self.memo:
            import numpy as np

            counted = np.frombuffer(self.count.lengths, dtype=f"u{self.count.lengths.itemsize}")
            lengths = np.minimum(counted, self.count.seq_len)
            self.memo[key] = _grouped_positions(lengths, micro_batch, grad_accum) if len(lengths) else 0.0
        return self.memo[key]

    def describe(self, micro_batch: int | None = None, grad_accum: int = 1) -> str:
        """One line for the assumptions: at ``micro_batch`` (and ``grad_accum``, which sizes the
        ``grouped`` megabatches), or (None) for a search over micro-batches."""
        if self.padding == "packed":
            return (f"rows: the dataset packed into {self.count.seq_len}-token rows (--padding packed), "
                    f"{self.count.packing_waste:.1%} of the positions empty")
        truncated = f", {self.count.truncated:,} sequences truncated" if self.count.truncated else ""
        if self.padding == "max":
            how = f"every sequence padded to {self.count.seq_len} tokens (--padding max)"
        elif micro_batch is None:
            grouped = (" over length-grouped micro-batches (--padding grouped, the Trainer's group_by_length)"
                       if self.padding == "grouped" else " (--padding longest, the stacks' collators)")
            return (f"rows: each micro-batch padded to its longest sequence{grouped}: the padding grows with the "
                    f"micro-batch; memory sized on the longest, {self.row_len} tokens{truncated}")
        elif self.padding == "grouped":
            mega = _megabatch(self.count.sequences, micro_batch, grad_accum)
            how = (f"each micro-batch of {micro_batch} padded to its longest, cut from length-sorted megabatches "
                   f"of {mega} sequences (--padding grouped, the Trainer's group_by_length; mean of "
                   f"{GROUPED_DRAWS} shuffles); memory sized on the longest, {self.row_len} tokens")
        else:
            how = (f"each micro-batch of {micro_batch} padded to its longest sequence, "
                   f"{_expected_longest(self.shares, micro_batch):,.0f} tokens on average (--padding longest, the "
                   f"stacks' collators; --padding packed if the run packs); memory sized on the longest, "
                   f"{self.row_len} tokens")
        positions = self.positions(micro_batch or 1, grad_accum)
        waste = 1 - self.count.kept_when_padded / positions if positions else 0.0
        return (f"rows: {how}: {positions:,.0f} positions computed an epoch for {self.count.kept_when_padded:,} "
                f"tokens kept, {waste:.0%} padding{truncated}")


# --- tokenizers --------------------------------------------------------------------------------

@record
class Counter:
    count: Callable[[list[str]], list[int]]
    described: str
    exact: bool


def byte_estimate() -> Counter:
    return Counter(lambda texts: [max(1, round(len(t.encode("utf-8")) / BYTES_PER_TOKEN)) for t in texts],
                   f"estimated at {BYTES_PER_TOKEN:g} UTF-8 bytes per token, no tokenizer", False)


def find_tokenizer_file(name: str) -> tuple[Path | None, str]:
    """``tokenizer.json`` for a path (file or folder) or a Hub id; (None, why not) when there is none."""
    from costplan import hub

    path = Path(name).expanduser()
    if path.is_file():
        return path, str(path)
    if path.is_dir():
        candidate = path / "tokenizer.json"
        return (candidate, str(candidate)) if candidate.is_file() else (None, f"no tokenizer.json in {path}")
    if hub.is_repo_id(name):  # the local cache only: counting never downloads
        cached = hub.cached_file(name, "tokenizer.json")
        if cached is None:
            return None, f"{name} has no tokenizer.json in the local Hugging Face cache ({hub.cache_dir()})"
        return cached, f"{name} from the local Hugging Face cache (revision {cached.parent.name[:12]})"
    return None, f"{name} is not a folder, a tokenizer.json or a Hub id"


def tokenizer_counter(name: str | None, *, required: bool = False) -> tuple[Counter, list[str]]:
    """A counter for the tokenizer ``name`` (a path or Hub id), else the byte estimate with the reason.
    ``required``: a tokenizer that cannot be loaded is an error instead."""
    notes: list[str] = []
    if name:
        path, where = find_tokenizer_file(name)
        if path is not None:
            try:
                from tokenizers import Tokenizer
            except ImportError:
                reason = "the tokenizers library is not installed (pip install 'costplan[data]')"
            else:
                try:
                    tokenizer = Tokenizer.from_file(str(path))
                except Exception as exc:  # a malformed tokenizer.json: whatever the Rust side raised
                    raise CostplanError(f"{path} is not a readable tokenizer.json: {exc}.") from None

                def count(texts: list[str]) -> list[int]:
                    return [len(e.ids) for e in tokenizer.encode_batch(texts, add_special_tokens=True)]

                return Counter(count, f"tokenizer {where}, special tokens included", True), notes
        else:
            reason = where
        if required:
            raise CostplanError(f"cannot count with tokenizer {name}: {reason}.")
        notes.append(f"no tokenizer for {name}: {reason}")
    return byte_estimate(), notes


# --- files ----------------------------------------------------------------------------------------

def dataset_files(path: str | Path) -> list[Path]:
    path = Path(path).expanduser()
    if path.is_file():
        if path.suffix.lower() not in SUFFIXES:
            raise CostplanError(f"{path}: {path.suffix or 'no suffix'} is not a dataset format costplan reads "
                                f"({', '.join(SUFFIXES)}).")
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
        if not files:
            raise CostplanError(f"{path} holds no {', '.join(SUFFIXES)} files.")
        return files
    raise CostplanError(f"No dataset at {path}.")


def record_text(record: Any) -> str:
    """The text of one record (see the module's docstring)."""
    if isinstance(record, str):
        return record
    if not isinstance(record, dict):
        return json.dumps(record) if record is not None else ""
    if isinstance(record.get("text"), str):
        return record["text"]
    for key in ("messages", "conversations", "conversation"):
        turns = record.get(key)
        if isinstance(turns, list):
            return "\n".join(str(t.get("content", t.get("value", ""))) if isinstance(t, dict) else str(t)
                             for t in turns)
    for keys in (("prompt", "completion"), ("instruction", "input", "output"), ("question", "answer")):
        if any(isinstance(record.get(k), str) for k in keys):
            return "\n".join(record[k] for k in keys if isinstance(record.get(k), str) and record[k])
    return "\n".join(v for v in record.values() if isinstance(v, str))


def _texts(path: Path) -> Iterator[str]:
    suffix = path.suffix.lower()
    if suffix in TEXT_SUFFIXES:
        with path.open(encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.strip():
                    yield line.rstrip("\n")
    elif suffix in JSON_SUFFIXES:
        yield from _json_texts(path)
    else:
        yield from _parquet_texts(path)


def _json_texts(path: Path) -> Iterator[str]:
    with path.open(encoding="utf-8") as handle:
        first = handle.read(1)
        while first and first.isspace():
            first = handle.read(1)
        handle.seek(0)
        if first == "[":  # a .json file holding one list of records
            try:
                records = json.load(handle)
            except json.JSONDecodeError as exc:
                raise CostplanError(f"{path} is not valid JSON: {exc}.") from None
            for record in records:
                yield record_text(record)
            return
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield record_text(json.loads(line))
            except json.JSONDecodeError as exc:
                raise CostplanError(f"{path} line {number} is not a JSON record: {exc}.") from None


def _parquet_texts(path: Path) -> Iterator[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise CostplanError(f"reading {path} needs pyarrow: pip install 'costplan[data]'.") from None
    try:
        parquet = pq.ParquetFile(path)
        for batch in parquet.iter_batches(batch_size=BATCH):
            for record in batch.to_pylist():
                yield record_text(record)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise CostplanError(f"{path} is not a readable Parquet file: {exc}.") from None


# --- counting -------------------------------------------------------------------------------------

Progress = Callable[[int], None]
"""Called with bytes counted so far (as increments; a file's increments add up to its size on disk)."""


def total_bytes(path: str | Path) -> int:
    """Bytes on disk of the files ``count_tokens`` reads (for a progress bar)."""
    return sum(f.stat().st_size for f in dataset_files(path))


def count_tokens(path: str | Path, seq_len: int = 2048, *, tokenizer: str | None = None, model: str | None = None,
                 progress: Progress | None = None) -> TokenCount:
    """Count the dataset at ``path`` with ``tokenizer`` (a path or Hub id; required to load when given),
    else the tokenizer next to ``model`` (a folder or Hub id; optional), else the byte estimate."""
    if not isinstance(seq_len, int) or seq_len <= 0:
        raise ValueError("--seq-len must be a positive integer")
    files = dataset_files(path)
    if tokenizer:
        counter, notes = tokenizer_counter(tokenizer, required=True)
    else:
        counter, notes = tokenizer_counter(model)
    lengths = array("I")
    counts = [_count_file(file, counter, lengths, progress) for file in files]
    if not any(c.sequences for c in counts):
        raise CostplanError(f"{path} holds no text to count.")
    described = counter.described + ("; " + "; ".join(notes) if notes else "")
    return TokenCount(tuple(counts), seq_len, described, counter.exact, lengths)


def _count_file(file: Path, counter: Counter, lengths: array, progress: Progress | None) -> FileCount:
    """Count one file in batches, appending each sequence's tokens to ``lengths``."""
    sequences = tokens = size = reported = 0
    on_disk = file.stat().st_size
    batch: list[str] = []

    def flush() -> None:
        nonlocal sequences, tokens, size, reported
        before = size
        for text, n in zip(batch, counter.count(batch), strict=True):
            sequences += 1
            tokens += n
            size += len(text.encode("utf-8"))
            lengths.append(n)
        batch.clear()
        if progress is not None:
            step = min(size - before, on_disk - reported)
            reported += step
            progress(step)

    try:
        for text in _texts(file):
            batch.append(text)
            if len(batch) >= BATCH:
                flush()
        flush()
    except UnicodeDecodeError as exc:
        raise CostplanError(f"{file} is not UTF-8 text: {exc}.") from None
    if progress is not None:
        progress(on_disk - reported)
    return FileCount(str(file), file.suffix.lower().lstrip("."), sequences, tokens, size)
