"""The model's own tokenizer, for what AgentWrite must know before it calls an engine.

Windowing the "text so far" needs exact prompt sizes, and token budgets need tokens per word;
both come from the tokenizer and chat template of the model being served. Shared by the
in-process vLLM engine and the Serve replica's handle engine, so both count the same way.
"""

from __future__ import annotations

from core.engines.base import Message
from core.text import count_words

_SAMPLE = {
    "en": (
        "The harbour town woke slowly. Fishermen checked their nets while the bakery on the corner "
        "opened its shutters, and the smell of fresh bread drifted down to the water, where gulls "
        "argued over scraps. By noon the market was loud with prices, greetings and gossip."
    ),
    "zh": "清晨的港口小镇慢慢醒来。渔民检查着渔网，街角的面包店打开了窗门，新鲜面包的香味飘向水边，"
    "海鸥在那里争抢食物。到了中午，集市上充满了讨价还价和问候的声音。",
}


class ChatTokenizer:
    """Chat-template rendering and token counts for one model directory or hub id."""

    def __init__(self, model_path: str):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        # Measured on plain prose; generated text carries more punctuation and line breaks
        # (seen: ~12% more tokens per word), and AgentWrite corrects per document from there.
        self.tokens_per_word = {lang: 1.12 * len(self.tokenizer.encode(t, add_special_tokens=False)) / count_words(t)
                                for lang, t in _SAMPLE.items()}

    def render(self, messages: list[Message]) -> list[int]:
        """Token ids of the chat prompt exactly as the engine will see it."""
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return self.tokenizer.encode(text, add_special_tokens=False)

    def count(self, messages: list[Message]) -> int:
        return len(self.render(messages))
