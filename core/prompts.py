"""Prompt wording for AgentWrite (our own). Kept in one place so a change of wording is one diff.

Layout that matters for speed: the plan call and every section call share one conversation.
System turn, then a user turn with the instruction and the plan, then for each section a short
user turn ("write part k") and the assistant's text. Each step's prompt is therefore the
previous prompt plus the previous answer plus a few new tokens, which vLLM's prefix cache serves
almost entirely from memory.
"""

from __future__ import annotations

SYSTEM = {
    "en": (
        "You are a careful long-form writer. You write fluent, concrete prose in the language of "
        "the request, without meta commentary about the writing process."
    ),
    "zh": "你是一位严谨的长文作者。请用与要求相同的语言写出流畅、具体的正文，不要评论写作过程。",
}

PLAN = {
    "en": (
        "Writing request:\n{instruction}\n\n"
        "Before writing, break the piece into {n_min} to {n_max} consecutive parts. For each part "
        "give its main point in one sentence and a word budget. The budgets must add up to about "
        "{target} words. Answer with JSON only."
    ),
    "zh": (
        "写作要求：\n{instruction}\n\n"
        "动笔之前，先把全文分成 {n_min} 到 {n_max} 个连续的部分。每部分用一句话写出要点，并给出字数预算，"
        "预算合计约 {target} 字。只用 JSON 回答。"
    ),
}

OUTLINE = {
    "en": "Writing request:\n{instruction}\n\nOutline ({target} words in total):\n{plan}\n\n"
    "I will ask for the parts one at a time. Write only the part I ask for, continuing the text "
    "naturally from the previous part.",
    "zh": "写作要求：\n{instruction}\n\n提纲（全文共 {target} 字）：\n{plan}\n\n"
    "我会逐部分请你写作。每次只写我要求的那一部分，并与上一部分自然衔接。",
}

PLAN_LINE = {"en": "{k}. {point} ({words} words)", "zh": "{k}. {point}（{words} 字）"}

STEP = {
    "en": "Write part {k} of {n} now, about {words} words: {point}\n"
    "Do not repeat earlier parts and do not add a title or a part number.",
    "zh": "现在写第 {k} 部分（共 {n} 部分），约 {words} 字：{point}\n不要重复前文，不要加标题或编号。",
}

CONTINUE = {
    "en": "Continue part {k} from where you stopped, about {words} more words, without repeating.",
    "zh": "接着第 {k} 部分停下的地方继续写，约 {words} 字，不要重复。",
}

OMITTED = {
    "en": "(Parts 1 to {k} are already written; only the latest parts are shown below. "
          "How each of them began, so you do not repeat them:)",
    "zh": "（第 1 至 {k} 部分已写完，下面只显示最近的部分。它们各自的开头如下，请勿重复：）",
}
RECAP_LINE = {"en": "Part {k}: {gist}", "zh": "第 {k} 部分：{gist}"}

# Points of the fallback plan (opening, middle parts, closing) when the model cannot plan.
FALLBACK_POINTS = {
    "en": ("Open the piece and set out its subject", "Develop the subject further with new material",
           "Bring the piece to a close"),
    "zh": ("开篇，点明主题", "继续展开主题，写出新的内容", "总结全文，收尾"),
}
