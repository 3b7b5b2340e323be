"""What the demo model says: deterministic, so tests and benchmarks can rely on it. It counts tokens by the
gateway's rule (`marketplace.gateway.tokens`), so the gateway's own count of a stream matches its usage."""

import hashlib
import math
import struct
from collections.abc import Iterator

from marketplace.gateway.tokens import (  # noqa: F401 - the demo server and its tests count with them
    MESSAGE_OVERHEAD_TOKENS,
    REPLY_PRIMING_TOKENS,
    content_text,
    prompt_tokens,
    tokens_of,
)

EMBEDDING_DIMENSIONS = 384
FEATURES_PER_TOKEN = 4  # hashed (dimension, sign) pairs each token adds to an embedding

# The reply's vocabulary: generated text reads as words, in both of the interface's languages.
WORDS = (
    "compute", "capacity", "accelerator", "cluster", "region", "model", "token", "latency", "throughput", "budget",
    "quota", "rental", "provider", "buyer", "gateway", "stream", "usage", "price", "hour", "memory", "bandwidth",
    "precision", "inference", "training", "batch", "queue", "node", "site",
    "算力", "模型", "推理", "训练", "集群", "区域", "显存", "带宽", "吞吐", "延迟", "预算", "配额", "节点", "令牌",
)  # fmt: skip


def reply_pieces(messages: list[dict], *, limit: int) -> Iterator[str]:
    """The reply to a conversation, one token per piece: it first quotes the start of the last user message, then
    goes on with words drawn from a generator seeded by the whole conversation. At most `limit` tokens; the pieces
    joined and counted again by `tokens_of` give as many tokens as pieces."""
    last_user = next((content_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
    seed = hashlib.sha256(repr([(m.get("role"), content_text(m.get("content"))) for m in messages]).encode())
    state = int.from_bytes(seed.digest()[:8], "big")

    def words() -> Iterator[str]:
        yield from ["Demo", "reply", "to", ":", *tokens_of(last_user)[:8], "."]
        nonlocal state
        while True:
            state = (state * 6364136223846793005 + 1442695040888963407) % 2**64  # Knuth's LCG: same every run
            yield WORDS[(state >> 33) % len(WORDS)]

    count = 0
    for word in words():
        for position, token in enumerate(tokens_of(word)):  # a CJK word is a token per character, not spaced
            if count == limit:
                return
            yield token if count == 0 or position else " " + token
            count += 1


def embedding(text: str, *, dimensions: int = EMBEDDING_DIMENSIONS) -> list[float]:
    """A unit vector by feature hashing: each token adds ±1 at a few dimensions picked by its hash, so texts sharing
    words point the same way (a similarity search over the demo behaves plausibly). Empty text: the zero vector."""
    vector = [0.0] * dimensions
    for token in tokens_of(text.lower()):
        digest = hashlib.blake2b(token.encode(), digest_size=4 * FEATURES_PER_TOKEN).digest()
        for (feature,) in struct.iter_unpack("<I", digest):
            vector[(feature >> 1) % dimensions] += 1.0 if feature & 1 else -1.0
    norm = math.sqrt(sum(value * value for value in vector))
    return [value / norm for value in vector] if norm else vector
