"""Phone numbers and ad keywords in OCR text of wall posters (小广告 / 牛皮癣).

Enforcement acts on the phone number printed on a flyer, so :func:`extract_phones` tries hard to read
mainland China numbers out of noisy OCR output:

* mobile ``1[3-9]`` + 9 digits, optionally ``+86``; written ``13812345678``, ``138-1234-5678``,
  ``138 1234 5678``, ``1381234 5678`` ...;
* landlines with area code: ``010-12345678``, ``(021)12345678``, ``0755-1234567``, ``075512345678``;
  3-digit area codes are ``010`` and ``02x``, the others have 4 digits; subscriber numbers have 7-8
  digits and do not start with 0;
* service numbers ``400``/``800`` + 7 digits (``400-123-4567``);
* local numbers (7-8 digits, no area code) only right after a phone label (电话, 热线, Tel ...).

OCR noise: full-width characters are folded (NFKC), inside digit runs ``O o D Q`` read as 0,
``I l | i !`` as 1, ``Z z`` as 2, ``S s`` as 5, ``B`` as 8, ``g`` as 9, and ``一 — – ~ . · _``, spaces
and brackets separate digit groups. A number must consist of whole digit groups, so digits that are
part of a longer number (ID cards, dates, prices) are never cut out as a phone.

Example:
    >>> [p.number for p in extract_phones("专业开锁 电话:138-1234-5678")]
    ['13812345678']
    >>> [p.number for p in extract_phones("(O21)1234 5678, 4OO-8l2-3456")]
    ['021-12345678', '400-812-3456']
    >>> extract_phones("3号楼2单元501室 2023-12-15 ¥1380.00")
    []
    >>> sorted(classify_ad("管道疏通 高价回收").categories)
    ['plumbing', 'recycling']
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

MOBILE = "mobile"
LANDLINE = "landline"
SERVICE = "service"
LOCAL = "local"

_CONFUSABLE = {"O": "0", "o": "0", "D": "0", "Q": "0", "I": "1", "l": "1", "|": "1", "i": "1", "!": "1",
               "Z": "2", "z": "2", "S": "5", "s": "5", "B": "8", "g": "9"}
_SEPARATORS = " \t-–—~一.·_()（）"
_RUN = re.compile(r"\+?[0-9" + re.escape("".join(_CONFUSABLE) + _SEPARATORS) + r"]+")
_LABEL = re.compile(r"(电话|电|话|热线|手机|联系|咨询|tel|phone|call)\s*[:：]?\s*$", re.IGNORECASE)
_MOBILE = re.compile(r"1[3-9]\d{9}")
_SERVICE = re.compile(r"[48]00\d{7}")
_LOCAL = re.compile(r"[2-9]\d{6,7}")


@dataclass(frozen=True)
class PhoneMatch:
    """One phone number found in text.

    Attributes:
        number: canonical form: mobile ``13812345678``, landline ``021-12345678``, service
            ``400-123-4567``, local ``12345678``.
        kind: ``mobile`` / ``landline`` / ``service`` / ``local``.
        raw: the characters it was read from.
        start: index of ``raw`` in the NFKC-normalised text.
    """

    number: str
    kind: str
    raw: str
    start: int


def normalise_text(text: str) -> str:
    """NFKC (full-width digits and brackets to ASCII) and unified whitespace.

    Example:
        >>> normalise_text("１３８　１２３４（５６７８）")
        '138 1234(5678)'
    """
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text))


def _classify_digits(digits: str, plus: bool) -> tuple[str, str] | None:
    """(canonical number, kind) when ``digits`` is exactly one phone number, else None."""
    if len(digits) == 13 and digits.startswith("86") and _MOBILE.fullmatch(digits[2:]):
        return digits[2:], MOBILE
    if plus:
        return None
    if _MOBILE.fullmatch(digits):
        return digits, MOBILE
    if _SERVICE.fullmatch(digits):
        return f"{digits[:3]}-{digits[3:6]}-{digits[6:]}", SERVICE
    if digits.startswith("0") and len(digits) >= 10:
        area_len = 3 if digits[1] in "12" else 4
        if digits[1] == "1" and digits[2] != "0":
            return None  # 010 is the only 01x area code
        sub = digits[area_len:]
        if len(sub) in (7, 8) and sub[0] != "0" and (area_len == 4 or len(sub) == 8):
            return f"{digits[:area_len]}-{sub}", LANDLINE
    return None


def _groups(run: str, offset: int) -> list[tuple[str, int, int]]:
    """Digit groups of a run as (digits, start, end) with confusables mapped to digits."""
    out: list[tuple[str, int, int]] = []
    for m in re.finditer(r"[0-9" + re.escape("".join(_CONFUSABLE)) + r"]+", run):
        digits = "".join(_CONFUSABLE.get(c, c) for c in m.group())
        out.append((digits, offset + m.start(), offset + m.end()))
    return out


def _variants(run: str, start: int) -> list[tuple[str, int]]:
    """The run without edge separators; and with letters glued to its edges dropped as well.

    A letter glued to a number can be a misread digit ("l3812345678") or part of a word
    ("Tel13812345678"); scanning both readings and keeping the union handles either.
    """
    seps = _SEPARATORS.replace("(", "").replace("（", "")
    lead = len(run) - len(run.lstrip(seps))
    core = run.rstrip(seps + ")）")[lead:]
    out: list[tuple[str, int]] = []
    conf = "".join(_CONFUSABLE)
    for strip_lead in (False, True):
        for strip_tail in (False, True):
            text, s = core, start + lead
            if strip_lead:
                stripped = text.lstrip(conf + seps)
                s += len(text) - len(stripped)
                text = stripped
            if strip_tail:
                text = text.rstrip(conf + seps)
            if text and (text, s) not in out:
                out.append((text, s))
    return out


def _scan(text: str, run: str, start: int) -> list[PhoneMatch]:
    real = sum(c.isdigit() for c in run)
    if real < 5:
        return []
    groups = _groups(run, start)
    found: list[PhoneMatch] = []
    i = 0
    while i < len(groups):
        best: tuple[int, tuple[str, str]] | None = None
        digits = ""
        for j in range(i, len(groups)):
            digits += groups[j][0]
            if len(digits) > 13:
                break
            plus = text[max(0, groups[i][1] - 1):groups[i][1]] == "+"
            hit = _classify_digits(digits, plus)
            if hit is not None:
                best = (j, hit)
        if best is None and len(groups[i][0]) in (7, 8) and _LOCAL.fullmatch(groups[i][0]) \
                and len(groups) == 1 and _LABEL.search(text[:groups[i][1]]):
            best = (i, (groups[i][0], LOCAL))
        if best is None:
            i += 1
            continue
        j, (number, kind) = best
        s, e = groups[i][1], groups[j][2]
        if s > 0 and text[s - 1] in "(（" and kind == LANDLINE:
            s -= 1
        found.append(PhoneMatch(number, kind, text[s:e], s))
        i = j + 1
    return found


def extract_phones(text: str) -> list[PhoneMatch]:
    """Every phone number in ``text`` (OCR output), in reading order, without duplicates.

    Args:
        text: one or more OCR lines (join lines with a newline, not with nothing, so digits of two lines
            do not merge).

    Returns:
        The matches; ``number`` is canonical, so the same number written twice appears once.
    """
    norm = normalise_text(text.replace("\n", " ; "))
    seen: set[str] = set()
    out: list[PhoneMatch] = []
    for m in _RUN.finditer(norm):
        for run, s in _variants(m.group(), m.start()):
            for p in _scan(norm, run, s):
                if p.number not in seen:
                    seen.add(p.number)
                    out.append(p)
    out.sort(key=lambda p: p.start)
    return out


def find_phone_numbers(text: str) -> list[str]:
    """Canonical phone numbers in ``text`` (see :func:`extract_phones`).

    Example:
        >>> find_phone_numbers("搬家 0755-1234567 / 400 123 4567")
        ['0755-1234567', '400-123-4567']
    """
    return [p.number for p in extract_phones(text)]


AD_KEYWORDS: dict[str, tuple[str, ...]] = {
    "certificates": ("办证", "刻章", "代开发票", "开发票", "发票", "证件", "文凭", "驾照", "假证"),
    "locksmith": ("开锁", "换锁", "修锁", "配钥匙", "开保险柜"),
    "plumbing": ("管道疏通", "疏通", "下水道", "马桶", "化粪池", "抽粪", "防水补漏", "补漏"),
    "loans": ("贷款", "借款", "放款", "无抵押", "套现", "信用卡", "网贷", "急用钱", "低息"),
    "jobs": ("招聘", "高薪", "兼职", "日结", "招工", "诚聘", "急招", "包吃住", "打字员"),
    "rental": ("出租", "租房", "求租", "转租", "转让", "旺铺", "单间", "合租"),
    "recycling": ("回收", "高价回收", "收购"),
    "moving": ("搬家", "搬运", "货运", "拉货"),
    "housekeeping": ("家政", "保洁", "保姆", "月嫂", "钟点工", "育儿嫂"),
    "repair": ("维修", "家电维修", "空调维修", "上门维修", "水电维修", "安装", "移机", "加氟"),
    "medical": ("老中医", "祖传", "专治", "包治", "性病", "不孕不育", "壮阳"),
    "education": ("家教", "补习", "辅导班", "培训"),
}
"""Typical 小广告 keywords by category (longest keyword of a category is matched first)."""


@dataclass(frozen=True)
class AdClassification:
    """Ad keywords found in text.

    Attributes:
        keywords: matched keywords in order of appearance (a keyword inside a longer matched one, e.g.
            疏通 in 管道疏通, is not repeated).
        categories: categories of the keywords, most frequent first.
    """

    keywords: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    by_category: dict[str, list[str]] = field(default_factory=dict)

    @property
    def is_ad(self) -> bool:
        return bool(self.keywords)


def classify_ad(text: str) -> AdClassification:
    """Find ad keywords in ``text`` and map them to categories.

    Example:
        >>> c = classify_ad("专业开锁 换锁 24小时")
        >>> c.keywords, c.categories
        (('开锁', '换锁'), ('locksmith',))
    """
    norm = normalise_text(text)
    taken = [False] * len(norm)
    hits: list[tuple[int, str, str]] = []
    pairs = sorted(((kw, cat) for cat, kws in AD_KEYWORDS.items() for kw in kws), key=lambda p: -len(p[0]))
    for kw, cat in pairs:
        for m in re.finditer(re.escape(kw), norm):
            if any(taken[m.start():m.end()]):
                continue
            taken[m.start():m.end()] = [True] * len(kw)
            hits.append((m.start(), kw, cat))
    hits.sort()
    by_cat: dict[str, list[str]] = {}
    keywords: list[str] = []
    for _, kw, cat in hits:
        if kw not in keywords:
            keywords.append(kw)
        by_cat.setdefault(cat, [])
        if kw not in by_cat[cat]:
            by_cat[cat].append(kw)
    cats = sorted(by_cat, key=lambda c: (-len(by_cat[c]), min(i for i, k in enumerate(keywords)
                                                               if k in by_cat[c])))
    return AdClassification(tuple(keywords), tuple(cats), by_cat)


@dataclass(frozen=True)
class TextFindings:
    """Phones and ad keywords of a poster's OCR text."""

    phones: tuple[PhoneMatch, ...]
    ad: AdClassification

    def to_details(self) -> dict[str, object]:
        """JSON-ready fields for an incident's ``details``."""
        return {
            "phones": [p.number for p in self.phones],
            "phone_kinds": [p.kind for p in self.phones],
            "keywords": list(self.ad.keywords),
            "categories": list(self.ad.categories),
        }


def analyze_text(lines: list[str] | str) -> TextFindings:
    """Phones and ad keywords of OCR output (one string or a list of lines).

    Example:
        >>> f = analyze_text(["专业管道疏通", "138 1234 5678"])
        >>> f.to_details()["phones"], f.to_details()["categories"]
        (['13812345678'], ['plumbing'])
    """
    text = lines if isinstance(lines, str) else "\n".join(lines)
    return TextFindings(tuple(extract_phones(text)), classify_ad(text))
