"""The language: chosen from the browser's, switchable by a link on every page, kept for next time."""

from tests.browser.browsing import shot


def test_the_browser_language_picks_the_page_language_and_the_link_switches_it(cloud, new_page):
    page = new_page(lang="zh-CN", phone=True)
    page.goto(cloud.url + "/")
    assert page.locator("html").get_attribute("lang") == "zh-CN"
    assert "扫描" in page.locator("h1").inner_text()
    shot(page, "home-zh-CN")
    page.get_by_role("link", name="English").click()
    assert page.locator("html").get_attribute("lang") == "en"
    assert page.locator("h1").inner_text() == "Scan a machine"
    page.goto(cloud.url + "/")
    assert page.locator("h1").inner_text() == "Scan a machine", "the choice is kept"
    page.get_by_role("link", name="中文").click()
    assert "扫描" in page.locator("h1").inner_text()
