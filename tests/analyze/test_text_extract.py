"""Phone-number and ad-keyword extraction from noisy OCR text."""

from __future__ import annotations

import pytest

from pipeline.analyze.text_extract import (
    AD_KEYWORDS,
    analyze_text,
    classify_ad,
    extract_phones,
    find_phone_numbers,
    normalise_text,
)

POSITIVES = [
    # mobile, plain and with separators
    ("13812345678", ["13812345678"]),
    ("电话:13812345678", ["13812345678"]),
    ("电话：138-1234-5678", ["13812345678"]),
    ("138 1234 5678", ["13812345678"]),
    ("138—1234—5678", ["13812345678"]),
    ("138一1234一5678", ["13812345678"]),
    ("1381234 5678", ["13812345678"]),
    ("手机 159.8765.4321", ["15987654321"]),
    ("+86 138 1234 5678", ["13812345678"]),
    ("+8613812345678", ["13812345678"]),
    ("专业开锁13912345678换锁", ["13912345678"]),
    ("Tel13812345678", ["13812345678"]),
    ("call 17700001111 now", ["17700001111"]),
    # OCR noise
    ("１３８１２３４５６７８", ["13812345678"]),
    ("138O0l23456", ["13800123456"]),
    ("l3812345678", ["13812345678"]),
    ("I38-I234-5678", ["13812345678"]),
    ("186 OO12 3456", ["18600123456"]),
    ("1S8 1234 S678", ["15812345678"]),
    ("13B12345678", ["13812345678"]),
    ("电话:13812345678l", ["13812345678"]),
    # landlines
    ("010-12345678", ["010-12345678"]),
    ("010 62345678", ["010-62345678"]),
    ("(021)12345678", ["021-12345678"]),
    ("（021）62345678", ["021-62345678"]),
    ("0755-1234567", ["0755-1234567"]),
    ("0755-12345678", ["0755-12345678"]),
    ("075512345678", ["075512345678"[:4] + "-" + "12345678"]),
    ("O2O-87654321", ["020-87654321"]),
    ("座机:0571 8888 6666", ["0571-88886666"]),
    # service numbers
    ("400-123-4567", ["400-123-4567"]),
    ("400 123 4567", ["400-123-4567"]),
    ("4001234567", ["400-123-4567"]),
    ("800-810-8888", ["800-810-8888"]),
    ("4OO-8l2-3456", ["400-812-3456"]),
    # local numbers only after a label
    ("电话:82345678", ["82345678"]),
    ("热线 6234567", ["6234567"]),
    # several numbers, duplicates folded
    ("13812345678 13987654321", ["13812345678", "13987654321"]),
    ("138-1234-5678 / 138 1234 5678", ["13812345678"]),
    ("搬家 0755-1234567 400 123 4567", ["0755-1234567", "400-123-4567"]),
    ("电话 13812345678\n微信 13987654321", ["13812345678", "13987654321"]),
    ("3 13812345678", ["13812345678"]),
]

NEGATIVES = [
    "3号楼2单元501室",
    "幸福路128号",
    "2023-12-15",
    "2023年12月15日",
    "2024.01.05 14:30",
    "20231215",
    "¥1380.00",
    "价格 1380 元",
    "月薪8000-12000",
    "日结200-300元",
    "面积120平 租金3500",
    "身份证 110101199003071234",
    "1381234567",  # 10 digits
    "138123456789",  # 12 digits
    "12812345678",  # 12x is not a mobile prefix
    "10812345678",
    "23812345678",
    "82345678",  # local without a label
    "011-12345678",  # 011 is no area code
    "010-1234567",  # 3-digit area codes have 8-digit numbers
    "0755-123456",  # too short
    "0755-01234567",  # subscriber starts with 0
    "500-123-4567",
    "400-123-456",
    "ISBN 978-7-111-12345-6",
    "Room 1201, Floor 12",
    "京A12345",
    "",
    "专业开锁 换锁",
]


@pytest.mark.parametrize(("text", "expected"), POSITIVES)
def test_phone_positives(text: str, expected: list[str]) -> None:
    assert find_phone_numbers(text) == expected


@pytest.mark.parametrize("text", NEGATIVES)
def test_phone_negatives(text: str) -> None:
    assert find_phone_numbers(text) == []


def test_phone_match_fields() -> None:
    (p,) = extract_phones("开锁 (021)62345678")
    assert p.kind == "landline"
    assert p.raw == "(021)62345678"
    assert normalise_text("开锁 (021)62345678")[p.start:].startswith("(021)")
    kinds = [p.kind for p in extract_phones("13812345678 400-123-4567 电话:82345678")]
    assert kinds == ["mobile", "service", "local"]


def test_lines_do_not_merge() -> None:
    # "138" at the end of one line and "12345678" on the next are not one number.
    assert find_phone_numbers("138\n12345678") == []


@pytest.mark.parametrize(("text", "category", "keyword"), [
    ("专业办证", "certificates", "办证"),
    ("刻章 代开发票", "certificates", "刻章"),
    ("代开发票", "certificates", "代开发票"),
    ("24小时开锁", "locksmith", "开锁"),
    ("管道疏通 马桶", "plumbing", "管道疏通"),
    ("疏通下水道", "plumbing", "疏通"),
    ("无抵押贷款", "loans", "贷款"),
    ("招聘 高薪 兼职", "jobs", "招聘"),
    ("高薪诚聘", "jobs", "高薪"),
    ("兼职打字员", "jobs", "兼职"),
    ("房屋出租", "rental", "出租"),
    ("租房", "rental", "租房"),
    ("高价回收 空调", "recycling", "高价回收"),
    ("搬家公司", "moving", "搬家"),
    ("家政保洁", "housekeeping", "家政"),
    ("家电维修", "repair", "家电维修"),
    ("空调维修 加氟", "repair", "空调维修"),
])
def test_keywords(text: str, category: str, keyword: str) -> None:
    c = classify_ad(text)
    assert c.is_ad
    assert category in c.categories
    assert keyword in c.keywords


@pytest.mark.parametrize("text", ["3号楼2单元", "消防通道 禁止停车", "安全出口", "小心地滑", "", "EXIT"])
def test_no_keywords(text: str) -> None:
    c = classify_ad(text)
    assert not c.is_ad and c.categories == ()


def test_nested_keyword_counted_once() -> None:
    c = classify_ad("管道疏通")
    assert c.keywords == ("管道疏通",)
    assert c.by_category == {"plumbing": ["管道疏通"]}


def test_categories_most_frequent_first() -> None:
    c = classify_ad("回收 开锁 换锁 修锁")
    assert c.categories == ("locksmith", "recycling")


def test_every_category_has_keywords() -> None:
    assert all(AD_KEYWORDS.values())


def test_analyze_text_details() -> None:
    d = analyze_text(["专业疏通 高价回收", "电话 138-1234-5678", "0755-1234567"]).to_details()
    assert d["phones"] == ["13812345678", "0755-1234567"]
    assert d["phone_kinds"] == ["mobile", "landline"]
    assert set(d["categories"]) == {"plumbing", "recycling"}  # type: ignore[call-overload]
