#!/usr/bin/env python3
"""Opens Strata's status page in Debian's headless chromium (Playwright, never a downloaded
browser) and reports what the browser rendered.

    status_check.py --url http://127.0.0.1:PORT/ --user NAME:PASSWORD --shot FILE.png

The credentials go as HTTP Basic, answered to the page's 401 challenge as a person's browser
would. Prints one JSON line: the HTTP status, the page's title and headings, every plot
(its id, and per line its name, its point count and the on-screen size of the drawn line),
and the rows of the tiers, runs and nodes tables as the browser lays them out. The screenshot
of the whole page goes to --shot. Exit status 1 when the page could not be opened.
"""
import argparse
import json
import os
import sys

from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"

READ_PAGE = """() => {
  const rows = id => [...document.querySelectorAll(`#${id} tr`)].slice(1)
      .map(tr => [...tr.cells].map(td => td.innerText.trim()));
  return {
    title: document.title,
    headings: [...document.querySelectorAll('h1, h2, h3')].map(h => h.innerText.trim()),
    plots: [...document.querySelectorAll('section.plot')].map(section => ({
      id: section.id,
      empty: section.querySelector('.empty') !== null,
      lines: [...section.querySelectorAll('polyline.series')].map(line => {
        const box = line.getBoundingClientRect();
        return {
          name: line.dataset.name,
          points: Number(line.dataset.points),
          drawn: line.points.length,
          width: box.width,
          height: box.height,
        };
      }),
    })),
    tiers: rows('tiers'),
    runs: rows('runs'),
    nodes: rows('nodes'),
    schedules: rows('schedules'),
  };
}"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--user", required=True, help="NAME:PASSWORD")
    parser.add_argument("--shot", required=True, help="where the screenshot goes")
    parser.add_argument("--timeout", type=int, default=30, help="seconds for the page to load")
    args = parser.parse_args()
    name, password = args.user.split(":", 1)
    os.makedirs(os.path.dirname(args.shot) or ".", exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            context = browser.new_context(
                viewport={"width": 1400, "height": 900},
                http_credentials={"username": name, "password": password},
            )
            page = context.new_page()
            response = page.goto(args.url, wait_until="load", timeout=args.timeout * 1000)
            seen = page.evaluate(READ_PAGE)
            seen["status"] = response.status if response else None
            seen["content_type"] = response.headers.get("content-type") if response else None
            page.screenshot(path=args.shot, full_page=True)
        except Exception as e:  # says what failed in the one JSON line
            print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
            return 1
        finally:
            browser.close()
    print(json.dumps(seen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
