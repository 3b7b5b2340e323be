"""Counting tokens: a bound before a call (what it may cost at most) and a count after one that sent no usage.

The count rule: a run of Latin letters or digits is one token, every other non-space character (a CJK character,
a punctuation mark) is one token; a chat prompt adds `MESSAGE_OVERHEAD_TOKENS` per message and
`REPLY_PRIMING_TOKENS` once, as OpenAI's chat formats do. It is the demo model's own rule, and close to real
tokenizers on Chinese text; an upstream's `usage` always wins over it.
"""

import math
import re

from django.conf import settings

TOKEN = re.compile(r"[A-Za-z0-9]+|[^\sA-Za-z0-9]")
MESSAGE_OVERHEAD_TOKENS = 3
REPLY_PRIMING_TOKENS = 3


def tokens_of(text: str) -> list[str]:
    return TOKEN.findall(text)


def content_valid(content) -> bool:
    """A message's content as OpenAI's chat API takes it: a string, null (an assistant's tool call), or a list of
    content parts, each an object with a `type`, a text part's `text` a string. Other part types (images, audio)
    pass as they are: the upstream judges them."""
    if content is None or isinstance(content, str):
        return True
    if not isinstance(content, list):
        return False
    return all(
        isinstance(part, dict)
        and isinstance(part.get("type"), str)
        and (part["type"] != "text" or isinstance(part.get("text"), str))
        for part in content
    )


def content_text(content) -> str:
    """A message's text: a string, or the text parts of a list of content parts (images and audio count nothing)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def prompt_tokens(messages: list[dict]) -> int:
    return REPLY_PRIMING_TOKENS + sum(
        MESSAGE_OVERHEAD_TOKENS + len(tokens_of(content_text(message.get("content")))) for message in messages
    )


def prompt_tokens_bound(messages: list[dict]) -> int:
    """At least as many tokens as any tokenizer makes of the prompt: byte-level tokenizers make at most one token
    per UTF-8 byte, so the bytes of the messages' text (plus the chat format's overhead) bound them all."""
    return REPLY_PRIMING_TOKENS + sum(
        MESSAGE_OVERHEAD_TOKENS + len(content_text(message.get("content")).encode()) for message in messages
    )


def prompt_tokens_limit(bound: int, measured: int) -> int:
    """The most prompt tokens an upstream may report: the request's count by the rule above times
    GATEWAY_PROMPT_TOKENS_TOLERANCE, and never more than the byte bound the call reserved for."""
    return min(bound, math.ceil(measured * settings.GATEWAY_PROMPT_TOKENS_TOLERANCE))


def embedding_inputs(value) -> list:
    """The inputs of an embeddings request: one string or token array, or a list of them."""
    if isinstance(value, str) or (isinstance(value, list) and value and isinstance(value[0], int)):
        return [value]
    return value if isinstance(value, list) else []


def embedding_tokens_bound(inputs: list) -> int:
    return sum(len(item.encode()) if isinstance(item, str) else len(item) for item in inputs)


def embedding_tokens(inputs: list) -> int:
    return sum(len(tokens_of(item)) if isinstance(item, str) else len(item) for item in inputs)
