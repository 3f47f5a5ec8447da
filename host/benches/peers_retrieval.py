#!/usr/bin/env python3
"""Peers of the retrieval benchmark: sentence-transformers (embedding) and faiss-cpu (search),
run on the inputs our Rust benchmark writes, with 2 threads.

Usage:
    peers_retrieval.py --model DIR --work DIR [--k 10]

--model is the all-MiniLM-L6-v2 folder (host/benches/fetch_minilm.sh). --work holds:
    texts.jsonl    n lines, each a JSON string: the exact passages we embedded
    queries.jsonl  q lines, each a JSON string: the queries
    passages.f32   our passage embeddings, little-endian float32, n x dim, row-major, L2-normalised
    queries.f32    our query embeddings, q x dim, same layout
    meta.json      {"n": n, "q": q, "dim": 384, "max_length": 256, "batch_size": 32}

Measures:
    sentence-transformers: encodes all n texts (max_seq_length = max_length, batch_size from
        meta.json, normalised; after a warm-up on 32 texts) -> passages/s, and how closely its
        embeddings agree with ours row by row (minimum cosine, maximum absolute difference).
    faiss on OUR embeddings: IndexFlatIP and IndexHNSWFlat(dim, M=32, inner product,
        efConstruction 40) searched with efSearch 16, 64 and 128. For each: add time, latency of
        one query per search call (p50, p99, and q / wall time of that loop), recall@k against
        the exact top-k of the flat index, size written by faiss.write_index, and queries/s
        with all queries in one search call.

Progress goes to stderr; stdout gets one JSON line:
    {"runtime", "k", "n", "q", "dim", "st_passages_per_s", "st_vs_ours_min_cosine",
     "st_vs_ours_max_abs", "faiss": {"flat" | "hnsw32_ef16" | "hnsw32_ef64" | "hnsw32_ef128":
     {"build_s", "p50_ms", "p99_ms", "qps", "batch_qps", "recall_at_k", "disk_bytes"}}}
"""
import os

# The Rust tokenizer inside sentence-transformers runs on a rayon pool; cap it like torch and faiss.
os.environ.setdefault("RAYON_NUM_THREADS", "2")

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import sentence_transformers
import torch
from sentence_transformers import SentenceTransformer

THREADS = 2
HNSW_M = 32
EF_SEARCH = (16, 64, 80, 96, 128)
BATCH_RUNS = 5  # timed runs of the batched search; the best counts


def log(message):
    print(message, file=sys.stderr, flush=True)


def read_strings(path, expected):
    strings = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    if len(strings) != expected or not all(isinstance(s, str) for s in strings):
        sys.exit(f"{path}: expected {expected} JSON strings, one per line")
    return strings


def read_matrix(path, rows, dim):
    matrix = np.fromfile(path, dtype="<f4")
    if matrix.size != rows * dim:
        sys.exit(f"{path}: expected {rows} x {dim} float32, found {matrix.size} values")
    return np.ascontiguousarray(matrix.reshape(rows, dim), dtype=np.float32)


def sentence_transformers_run(model_dir, texts, ours, meta):
    """Throughput of SentenceTransformer.encode and agreement of its rows with ours."""
    model = SentenceTransformer(str(model_dir), device="cpu")
    model.max_seq_length = meta["max_length"]

    def encode(batch):
        return model.encode(batch, batch_size=meta["batch_size"], normalize_embeddings=True,
                            convert_to_numpy=True, show_progress_bar=False)

    encode(texts[:32])
    started = time.perf_counter()
    theirs = encode(texts)
    elapsed = time.perf_counter() - started
    cosine = np.sum(theirs * ours, axis=1) / (
        np.linalg.norm(theirs, axis=1) * np.linalg.norm(ours, axis=1))
    return {
        "st_passages_per_s": len(texts) / elapsed,
        "st_vs_ours_min_cosine": float(cosine.min()),
        "st_vs_ours_max_abs": float(np.abs(theirs - ours).max()),
    }


def disk_bytes(index):
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "index.faiss")
        faiss.write_index(index, path)
        return os.path.getsize(path)


def search_run(index, queries, exact, k):
    """Single-query latency, batched throughput and recall@k of one configured index."""
    q = len(queries)
    index.search(queries[:1], k)
    latencies = np.empty(q)
    found = np.empty((q, k), dtype=np.int64)
    loop_started = time.perf_counter()
    for i in range(q):
        started = time.perf_counter()
        _, ids = index.search(queries[i:i + 1], k)
        latencies[i] = time.perf_counter() - started
        found[i] = ids[0]
    loop = time.perf_counter() - loop_started
    batch = float("inf")
    for _ in range(BATCH_RUNS):  # best of several, as our side does
        started = time.perf_counter()
        index.search(queries, k)
        batch = min(batch, time.perf_counter() - started)
    recall = np.mean([len(set(found[i]) & set(exact[i])) / k for i in range(q)])
    return {
        "p50_ms": float(np.percentile(latencies, 50) * 1e3),
        "p99_ms": float(np.percentile(latencies, 99) * 1e3),
        "qps": q / loop,
        "batch_qps": q / batch,
        "recall_at_k": float(recall),
    }


def faiss_run(passages, queries, k):
    """Flat (exact) and HNSW32 indexes over our embeddings; the flat top-k is the ground truth."""
    dim = passages.shape[1]
    results = {}

    flat = faiss.IndexFlatIP(dim)
    started = time.perf_counter()
    flat.add(passages)
    build = time.perf_counter() - started
    _, exact = flat.search(queries, k)
    log("faiss: flat")
    results["flat"] = {"build_s": build, **search_run(flat, queries, exact, k),
                       "disk_bytes": disk_bytes(flat)}

    hnsw = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
    log(f"faiss: building HNSW{HNSW_M} (efConstruction {hnsw.hnsw.efConstruction})")
    started = time.perf_counter()
    hnsw.add(passages)
    build = time.perf_counter() - started
    size = disk_bytes(hnsw)
    for ef in EF_SEARCH:
        hnsw.hnsw.efSearch = ef
        log(f"faiss: HNSW{HNSW_M} efSearch {ef}")
        results[f"hnsw{HNSW_M}_ef{ef}"] = {"build_s": build, **search_run(hnsw, queries, exact, k),
                                           "disk_bytes": size}
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, type=Path, help="all-MiniLM-L6-v2 folder")
    parser.add_argument("--work", required=True, type=Path, help="folder our benchmark wrote")
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    faiss.omp_set_num_threads(THREADS)

    meta = json.loads((args.work / "meta.json").read_text())
    n, q, dim = meta["n"], meta["q"], meta["dim"]
    texts = read_strings(args.work / "texts.jsonl", n)
    read_strings(args.work / "queries.jsonl", q)  # only checked: faiss searches our query vectors
    passages = read_matrix(args.work / "passages.f32", n, dim)
    queries = read_matrix(args.work / "queries.f32", q, dim)

    log(f"sentence-transformers: encoding {n} passages")
    embedding = sentence_transformers_run(args.model, texts, passages, meta)
    log(f"faiss: {n} passages, {q} queries, k = {args.k}")
    search = faiss_run(passages, queries, args.k)
    print(json.dumps({
        "runtime": f"sentence-transformers {sentence_transformers.__version__}"
                   f" + faiss-cpu {faiss.__version__}",
        "k": args.k, "n": n, "q": q, "dim": dim,
        **embedding,
        "faiss": search,
    }))


if __name__ == "__main__":
    main()
