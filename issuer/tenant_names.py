"""Tenant names: what may be one, and when two are the same name.

A tenant name is read by people choosing whom to trust, so a name that looks like
another's must not be a second tenant:

* **Refused** (:func:`check`): control characters (Cc), invisible ones -- format
  characters (Cf: zero-width space and joiners, the byte order mark, bidirectional
  controls such as the right-to-left override) and the other default-ignorable code
  points (UAX #44: variation selectors, Hangul fillers, ...) --, line and paragraph
  separators, private-use, surrogate and unassigned code points; and a name that mixes
  scripts (``acme`` with a Cyrillic U+0430 for its ``a``), except the mixes UTS #39's "highly
  restrictive" level allows (Latin with Han and Japanese kana, with Han and Bopomofo,
  with Han and Hangul). Script data: ``confusable_homoglyphs`` (Unicode's Scripts.txt).
* **The same name** (:func:`key`, unique in the database): equal after NFKC and case
  folding (``ACME``, full-width ``acme`` at U+FF41...), ignoring the generic combining
  diacritics (``ácme``, ``a`` + U+0301) and runs of spaces.

Not caught: a name written wholly in another script whose letters look Latin (``ace``
spelled U+0430 U+0441 U+0435 in Cyrillic beside the Latin one): telling those apart
needs Unicode's confusable skeleton (UTS #39 §4), which is not computed here.
"""

from __future__ import annotations

import unicodedata

from confusable_homoglyphs import categories

MAX_LENGTH = 200
#: The longest key stored (NFKC may lengthen a name: U+FDFA becomes 18 characters).
MAX_KEY_LENGTH = 400
_REFUSED_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}
#: UAX #44 Default_Ignorable_Code_Point that are not format characters (Cf).
_DEFAULT_IGNORABLE = ((0x034F, 0x034F), (0x115F, 0x1160), (0x17B4, 0x17B5),
                      (0x180B, 0x180F), (0x3164, 0x3164), (0xFE00, 0xFE0F),
                      (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0x1D173, 0x1D17A),
                      (0xE0000, 0xE0FFF))
#: Script-neutral characters: digits, punctuation, spaces; combining marks.
_NEUTRAL = {"COMMON", "INHERITED"}
#: UTS #39 §5.2 "highly restrictive": these scripts may be mixed.
_ALLOWED_MIXES = ({"LATIN", "HAN", "HIRAGANA", "KATAKANA"}, {"LATIN", "HAN", "BOPOMOFO"},
                  {"LATIN", "HAN", "HANGUL"})
#: Combining Diacritical Marks and their supplements: accents that do not make a name.
_DIACRITICS = ((0x0300, 0x036F), (0x1AB0, 0x1AFF), (0x1DC0, 0x1DFF), (0x20D0, 0x20FF),
               (0xFE20, 0xFE2F))


class InvalidTenantName(ValueError):
    """The name cannot be a tenant's; the message says why."""


def check(name: str) -> str:
    """``name`` without surrounding spaces, if it may name a tenant."""
    name = name.strip()
    if not name or len(name) > MAX_LENGTH:
        raise InvalidTenantName(f"a tenant name is 1 to {MAX_LENGTH} characters")
    for char in name:
        if unicodedata.category(char) in _REFUSED_CATEGORIES or _within(char,
                                                                       _DEFAULT_IGNORABLE):
            raise InvalidTenantName(f"a tenant name may not hold invisible or control "
                                    f"characters (U+{ord(char):04X})")
    scripts = {categories.alias(char) for char in unicodedata.normalize("NFKC", name)}
    scripts -= _NEUTRAL
    if len(scripts) > 1 and not any(scripts <= allowed for allowed in _ALLOWED_MIXES):
        raise InvalidTenantName("a tenant name may not mix scripts ("
                                + ", ".join(sorted(script.title() for script in scripts)) + ")")
    if len(key(name)) > MAX_KEY_LENGTH:
        raise InvalidTenantName("a tenant name is too long once normalized")
    return name


def key(name: str) -> str:
    """What makes two names the same: NFKC, case folded, without diacritics, one space
    between words."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())
    decomposed = unicodedata.normalize("NFKD", folded)
    bare = "".join(char for char in decomposed if not _within(char, _DIACRITICS))
    return " ".join(unicodedata.normalize("NFC", bare).split())


def _within(char: str, ranges: tuple[tuple[int, int], ...]) -> bool:
    point = ord(char)
    return any(low <= point <= high for low, high in ranges)
