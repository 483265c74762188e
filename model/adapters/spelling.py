"""From a word as a decoder spells it to the tokens a model reads.

A CTC decoder writes words as people do (``daewoo's``, ``don't``); a model trained on Penn
Treebank text reads their clitics as tokens of their own (``daewoo 's``, ``do n't``), so the
written word is outside its vocabulary and scores as ``<unk>`` plus the OOV penalty, and a beam
search learns to drop the clitic. ``treebank_split`` makes the treebank's split; pass it as an
adapter's ``tokenize`` for such a model.
"""

from __future__ import annotations

import re

# a clitic at the end of a word, or the start of one (a decoder asks about words half spelt):
# "n't" and "n'", or an apostrophe and what follows it ("'s", "'", "'l" of "'ll")
_CLITIC_END = re.compile(r"(?:n't|n'|'[^']*)$")


def treebank_split(word: str) -> list[str]:
    """``daewoo's`` → ``daewoo 's``, ``don't`` → ``do n't``, ``can't`` → ``ca n't``,
    ``rivals'`` → ``rivals '``; a word without a clitic stays whole (``’`` reads as ``'``)."""
    word = word.replace("\u2019", "'")
    clitic = _CLITIC_END.search(word)
    if clitic is None or clitic.start() == 0:
        return [word] if word else []
    return [word[: clitic.start()], clitic.group()]
