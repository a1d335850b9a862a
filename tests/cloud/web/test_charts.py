"""The dashboard's SVG charts (cloud/web/charts.py): nice ticks, and bars a reader can trust."""

import xml.etree.ElementTree as ET

import pytest

from cloud.web.charts import Bar, bar_chart, nice_step, nice_ticks

SVG = "{http://www.w3.org/2000/svg}"


def parse(svg) -> ET.Element:
    return ET.fromstring(str(svg))


def bars_of(root):
    return root.findall(f".//{SVG}rect")


@pytest.mark.parametrize("span,step", [(10, 2), (7, 2), (100, 20), (1000, 200), (350, 100), (1, 1), (3, 1),
                                        (24_999, 5000), (123_456, 50_000)])
def test_the_step_is_one_two_or_five_times_a_power_of_ten(span, step):
    assert nice_step(span) == step


def test_fractional_steps_when_asked():
    assert nice_step(1, whole=False) == pytest.approx(0.2)
    assert nice_ticks(0, 0.9, whole=False) == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])


@pytest.mark.parametrize("low,high,ticks", [
    (0, 350, [0, 100, 200, 300, 400]),
    (0, 1000, [0, 200, 400, 600, 800, 1000]),
    (120, 350, [0, 100, 200, 300, 400]),  # the axis starts at zero: bars compare honestly
    (-350, 1000, [-500, 0, 500, 1000]),
    (-70, -10, [-80, -60, -40, -20, 0]),
    (0, 0, [0, 1]),
    (0, 1, [0, 1]),
    (0, 3, [0, 1, 2, 3]),
])
def test_ticks_cover_the_values_and_zero(low, high, ticks):
    assert nice_ticks(low, high) == ticks


def test_each_value_gets_a_bar_as_tall_as_its_share_of_the_axis():
    root = parse(bar_chart([Bar("Mon", 100), Bar("Tue", 400), Bar("Wed", 0)], "Sales", "per day",
                           fmt=lambda v: f"¥{v / 100:,.2f}"))
    rects = bars_of(root)
    assert len(rects) == 3
    heights = [float(r.get("height")) for r in rects]
    assert heights[2] == 0
    assert heights[1] == pytest.approx(4 * heights[0])
    assert heights[1] == pytest.approx(220)  # 400 is the top tick: the whole plot
    assert [r.find(f"{SVG}title").text for r in rects] == ["Mon: ¥1.00", "Tue: ¥4.00", "Wed: ¥0.00"]
    labels = [t.text for t in root.iter(f"{SVG}text")]
    assert "¥4.00" in labels and "¥0.00" in labels and "Tue" in labels


def test_the_chart_names_itself_for_screen_readers_and_scales_to_the_width():
    root = parse(bar_chart([Bar("m1", 5)], "Sales per machine", "m1 sold most", horizontal=True))
    assert root.get("role") == "img"
    assert root.find(f"{SVG}title").text == "Sales per machine"
    assert root.find(f"{SVG}desc").text == "m1 sold most"
    assert root.get("viewBox").startswith("0 0 640 ")
    assert root.get("width") == "100%"


def test_no_data_is_a_chart_that_says_so():
    root = parse(bar_chart([], "Sales", "nothing", empty="No sales in this period"))
    assert bars_of(root) == []
    assert "No sales in this period" in [t.text for t in root.iter(f"{SVG}text")]


def test_one_value_and_an_all_zero_series():
    one = bars_of(parse(bar_chart([Bar("only", 7)], "t", "d")))
    assert len(one) == 1 and float(one[0].get("height")) > 0
    zeros = bars_of(parse(bar_chart([Bar(str(h), 0) for h in range(24)], "t", "d", label_every=3)))
    assert len(zeros) == 24 and all(float(r.get("height")) == 0 for r in zeros)


def test_a_refund_hangs_below_the_zero_line():
    root = parse(bar_chart([Bar("sale", 1000), Bar("refund", -350)], "t", "d"))
    sale, refund = bars_of(root)
    zero = float(root.find(f".//{SVG}line[@class='zero']").get("y1"))
    assert float(sale.get("y")) + float(sale.get("height")) == pytest.approx(zero, abs=0.1)
    assert float(refund.get("y")) == pytest.approx(zero, abs=0.1)
    assert float(refund.get("height")) == pytest.approx(0.35 * float(sale.get("height")), abs=0.02)
    assert "negative" in refund.get("class")


def test_horizontal_bars_grow_from_zero_and_keep_long_names_in_their_tooltips():
    name = "SKU-0001 A product with a really rather long name"
    root = parse(bar_chart([Bar(name, 300), Bar("b", 100), Bar("r", -100)], "t", "d", horizontal=True))
    a, b, r = bars_of(root)
    assert float(a.get("width")) == pytest.approx(3 * float(b.get("width")))
    assert float(a.get("x")) == pytest.approx(float(b.get("x")))
    assert float(r.get("x")) + float(r.get("width")) == pytest.approx(float(b.get("x")))
    assert a.find(f"{SVG}title").text == f"{name}: 300"


def test_text_is_escaped():
    root = parse(bar_chart([Bar("<b>&", 1)], "a < b", "c & d"))
    assert root.find(f"{SVG}title").text == "a < b"
    assert bars_of(root)[0].find(f"{SVG}title").text == "<b>&: 1"
