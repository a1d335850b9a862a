"""The DEX reader against the real audits in shared/dex/, and against the damage real files come with.

The expected figures were read off the files by eye; each comment names the line they come from.
"""

from __future__ import annotations

import pytest

import dex
from dex.crc import crc16, g85
from tests.dex.files import path, raw

def test_crc16_is_the_arc_variant():
    assert crc16(b"123456789") == 0xBB3D  # the published check value of CRC-16/ARC


def test_jofemar_sample():
    a = dex.read_file(path("jofemar-sample.dex"))
    assert (a.crc, a.crc_stated, a.crc_computed) == ("matched", "F66D", "F66D")  # line 144: G85*F66D
    assert a.notes == [] and a.problems == []  # SE*144 (line 145) counts ST (line 2) .. SE exactly
    assert a.identity.serial == "JOF" and a.identity.asset == "4294967295"  # line 3: ID1*JOF*****4294967295
    assert (a.identity.board_serial, a.identity.board_model, a.identity.board_software) == (
        "JSD006556", "PCB8629", "JSDAA014")  # line 4: CB1
    assert (a.decimals, a.currency) == (2, "EUR")  # line 5: ID4*2*1978
    assert a.read_at.isoformat() == "2024-04-15T15:04:21"  # line 6: ID5*20240415*150421
    assert (a.paid.value_init, a.paid.count_init, a.paid.value_reset, a.paid.count_reset) == (143500, 423, 142450, 421)  # line 9
    assert (a.free.value_init, a.free.count_init) == (20, 2)  # line 11: VA3*20*2*0*0
    assert (a.cash.value_init, a.cash.count_init) == (128250, 382)  # line 20: CA2*128250*382*127200*380
    assert (a.cashless.value_init, a.cashless.count_init) == (15250, 41)  # line 25: DA2*15250*41*15250*41
    assert len(a.products) == 36  # PA1*10 .. PA1*45
    p12 = a.product("12")  # lines 45-48
    assert (p12.price, p12.sold.count_init, p12.sold.value_init) == (380, 23, 8740)
    assert [(x.device, x.sold.count_init, x.sold.value_init) for x in p12.by_payment] == [("CA", 22, 8360), ("DA", 1, 380)]
    p23 = a.product("23")  # lines 85-88: PA2*43*12900*42*12600 (line 86)
    assert (p23.sold.count_reset, p23.sold.value_reset) == (42, 12600)
    assert a.product("10").free.count_init == 2  # line 38: PA4*2*20*0*0**
    assert [m.elements for m in a.vendor] == [["VMA501F1", "1", "0", "0"], ["VMA501F1", "2", "0", "0"]]  # lines 7-8
    assert [(e.tag, e.date, e.time) for e in a.events] == [("EA3", "20240415", "150421")]  # line 143
    assert "BA1" in [s.tag for s in a.unknown] and "CA17" in [s.tag for s in a.unknown]  # kept, not dropped
    assert all(c.ok for c in a.checks())  # VA1 = sum of PA2 = CA2 + DA2; each PA2 = its PA7 lines


def test_animo_optime():
    a = dex.read_file(path("animo-optime.dex"))
    assert (a.crc, a.crc_stated) == ("matched", "B9AE")  # line 117: G85*B9AE
    assert a.identity.serial == "ANIKraftver" and a.identity.model == "3M3Aba"  # line 4: ID1
    assert a.identity.asset == "Animo"  # ID106
    assert (a.decimals, a.currency) == (2, "EUR")  # line 5: ID4*2*1978*EUR
    assert a.read_at.isoformat() == "2010-01-19T23:01:11"  # line 6
    assert (a.paid.value_init, a.paid.count_init) == (816100, 8161)  # line 7: VA1*816100*8161*816100*8161
    assert (a.test.count_init, a.free.count_init) == (29, 2322)  # lines 8-9: VA2*0*29, VA3*0*2322
    assert a.cash is None and a.cashless is None  # no CA2/DA2 in this file
    coffee = a.product("0")  # lines 10-13: PA1*0*100*COFFEE, PA2*412*41200*2655
    assert (coffee.name, coffee.price, coffee.sold.count_init, coffee.sold.value_init) == ("COFFEE", 100, 412, 41200)
    assert coffee.free.count_init == 359  # line 13: PA4*359*0*591
    assert a.product("5").name == "LATTE MACCHIATO" and a.product("5").sold.count_init == 324  # lines 30-31
    assert len(a.products) == 24  # PA1*0 .. PA1*23
    assert [(e.code, e.date, e.time) for e in a.events][:2] == [("Clean Brewer", "20100111", "232706"),
                                                                ("Rinse Brewer", "20100111", "232706")]  # lines 109-110
    assert len(a.events) == 6  # six EA6 lines
    assert {s.tag for s in a.unknown} == {"AM1", "SA2", "SD1"}
    # The file's own totals disagree (the PA2 sums are 1537 vends, 1537.00 EUR: this machine counts its
    # paid vends elsewhere too); shown as a failed check, not an error.
    check = next(c for c in a.checks() if c.name == "VA1 paid vends = sum of PA2")
    assert (check.stated, check.summed, check.ok) == (8161, 1537, False)


def test_sielaff_siline_cut_short():
    a = dex.read_file(path("sielaff-siline.dex"))
    # The published file ends at line 55 (MA5*CA11*1*2*3), without G85, SE or DXE.
    assert a.crc == "absent"
    assert "no SE line: the file may be cut short" in a.notes and "no DXE line: the file may be cut short" in a.notes
    assert a.segments[0].tag == "MC5" and a.segments[0] in a.unknown  # line 1, before the DXS
    assert a.identity.serial == "SIE90517939" and a.identity.asset == "90517939"  # line 4
    assert a.identity.board_software == "0.15.1 r54964"  # line 5: CB1
    assert a.read_at.isoformat() == "2023-08-21T17:53:47"  # line 11: ID5*20230821*175347**CET
    assert (a.paid.value_init, a.paid.count_init, a.paid.value_reset, a.paid.count_reset) == (234850, 1666, 114400, 1088)  # line 12
    assert (a.test.value_init, a.test.count_init) == (5725, 28)  # line 13
    assert (a.cash.value_init, a.cash.count_init) == (232950, 1659)  # line 46: CA2
    assert (a.cashless.value_init, a.cashless.count_init) == (1900, 7)  # line 40: DA2*1900*7*1500*5
    assert a.products == []
    assert a.vendor[-1].elements == ["CA11", "1", "2", "3"]  # line 55, the last
    assert all(c.ok for c in a.checks())  # CA2 + DA2 = VA1: 232950 + 1900 = 234850, 1659 + 7 = 1666


def test_crlf_trailing_spaces_and_caret_separators_read_the_same():
    text = raw("jofemar-sample.dex").decode()
    caret = text.replace("*", "^").split("\n")
    # A machine that separates with ^ computes its CRC over the ^: give the variant the G85 it would write.
    caret[142] = "G85^" + g85(caret[1:142])
    variants = [text.replace("\n", "\r\n"), text.replace("\n", "  \n"), "\n".join(caret)]
    for v in variants:
        a = dex.read(v.encode(), "variant")
        assert a.crc == "matched", a.notes
        assert (a.paid.value_init, a.paid.count_init) == (143500, 423)
        assert a.product("29").sold.value_init == 16770


def test_a_ctrl_z_or_nul_padding_at_the_end_is_not_content():
    a = dex.read(raw("jofemar-sample.dex") + b"\x1a" + b"\x00" * 64)
    assert a.crc == "matched" and a.problems == [] and a.paid.count_init == 423


def test_no_envelope_at_all_is_read_and_said():
    text = "\n".join(l for l in raw("jofemar-sample.dex").decode().split("\n")
                     if not l.startswith(("DXS", "ST*", "SE*", "DXE", "G85")))
    a = dex.read(text.encode())
    assert a.crc == "absent" and len(a.notes) == 4
    assert a.paid.count_init == 423


def test_corrupt_crc_is_reported_and_the_data_still_read():
    text = raw("jofemar-sample.dex").replace(b"VA1*143500*423", b"VA1*153500*423")
    a = dex.read(text)
    assert a.crc == "mismatch" and a.crc_stated == "F66D" and a.crc_computed != "F66D"
    assert any("G85 CRC mismatch" in n for n in a.notes)
    assert a.paid.value_init == 153500


def test_a_bad_field_is_reported_with_its_line_and_block_and_the_rest_read():
    text = raw("jofemar-sample.dex").replace(b"PA2*23*8740*23*8740", b"PA2*2X3*8740*23*8740")
    a = dex.read(text)
    assert [str(p) for p in a.problems] == ["line 46 (PA2): PA201 is '2X3', not a number"]
    assert a.product("12").sold.count_init is None and a.product("12").sold.value_init == 8740
    assert a.product("29").sold.count_init == 43  # read on past the bad line


def test_unknown_block_is_kept_in_order():
    text = raw("jofemar-sample.dex").replace(b"EA3*", b"ZZ9*1*2*3\nEA3*")
    a = dex.read(text)
    zz = [s for s in a.unknown if s.tag == "ZZ9"]
    assert zz and zz[0].elements == ["1", "2", "3"] and zz[0].line == 143
    assert a.crc == "mismatch"  # a line added after the machine wrote the file


def test_a_line_that_is_not_dex_is_a_problem_not_a_crash():
    a = dex.read(b"DXS*X*VA*V1/1*1\nVA1*100*1*100*1\nthis is not dex\n")
    assert [str(p) for p in a.problems] == ["line 3 (?): not a DEX line: 'this is not dex'"]
    assert a.paid.count_init == 1


def test_pa2_before_any_pa1_is_reported():
    a = dex.read(b"VA1*100*1*100*1\nPA2*1*100*1*100\n")
    assert [str(p) for p in a.problems] == ["line 2 (PA2): PA2 before any PA1: not counted to a product"]


def test_truncated_mid_line():
    data = raw("jofemar-sample.dex")
    cut = data[:data.index(b"PA7*20*CA*0*330*44") + 12]  # cut inside line 76
    a = dex.read(cut)
    assert a.crc == "absent" and "no SE line: the file may be cut short" in a.notes
    p20 = a.product("20")
    assert p20.by_payment[0].sold.count_init is None  # PA705 is missing: counted as unknown, not 0
    assert p20.sold.count_init == 48


@pytest.mark.parametrize("data, says", [
    (b"", "empty"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "binary content at byte 6 \\(0x1a\\)"),
    (bytes(range(256)) * 4, "binary content at byte 0"),
    (b"hello world\nthis is a letter\n", "no line of it looks like a DEX block"),
])
def test_garbage_is_refused_clearly(data, says):
    with pytest.raises(dex.DexError, match=says):
        dex.read(data, "upload.dex")


def test_a_50_mb_file_is_refused_by_its_size_before_it_is_read(tmp_path, monkeypatch):
    big = tmp_path / "big.dex"
    with open(big, "wb") as f:
        f.truncate(50 * 1024 * 1024)  # sparse: 50 MB on paper
    opened = []
    monkeypatch.setattr("builtins.open", lambda *a, **k: opened.append(a) or (_ for _ in ()).throw(AssertionError))
    with pytest.raises(dex.DexError, match="52,428,800 bytes is too big for a DEX audit"):
        dex.read_file(str(big))
    assert opened == []  # refused from its size alone
    with pytest.raises(dex.DexError, match="too big"):
        dex.read(b"VA1*1*1\n" * (dex.MAX_BYTES // 8 + 1))
