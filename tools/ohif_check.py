#!/usr/bin/env python3
"""Drives the OHIF viewer in headless Chromium against a Strata DICOMweb server.

Serves OHIF's prebuilt static site (the `dist/` of @ohif/app, tools/setup-deps.sh
install_ohif) on a free loopback port, prints `serving http://127.0.0.1:PORT` and reads the
DICOMweb root (e.g. http://127.0.0.1:8080/dicom-web) from one line of standard input, so the
server under test can allow that origin (CORS) before the browser starts. Then, in Debian's
chromium through Playwright:

1. the study list (`/`) must show every `--patient` name;
2. the viewer (`/viewer?StudyInstanceUIDs=...`) of `--study` must draw an image: the
   viewport's canvas must hold many different pixel values, not one colour.

Screenshots go to `--shots`. Any answer of the DICOMweb server with status 400 or more fails
the check. Prints one JSON line with what it saw; exit status 1 on failure.
"""
import argparse
import base64
import http.server
import json
import os
import sys
import threading
import time
import urllib.parse

from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"


def app_config(dicom_web):
    """OHIF's app-config.js with one DICOMweb data source: Strata."""
    source = {
        "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
        "sourceName": "strata",
        "configuration": {
            "friendlyName": "Strata",
            "name": "strata",
            "wadoUriRoot": dicom_web,
            "qidoRoot": dicom_web,
            "wadoRoot": dicom_web,
            "qidoSupportsIncludeField": True,
            "supportsReject": False,
            "imageRendering": "wadors",
            "thumbnailRendering": "thumbnail",
            "enableStudyLazyLoad": True,
            "supportsFuzzyMatching": True,
            "supportsWildcard": True,
            "staticWado": False,
            "singlepart": "",
            "omitQuotationForMultipartRequest": True,
        },
    }
    config = {
        "routerBasename": None,
        "extensions": [],
        "modes": [],
        "showStudyList": True,
        "maxNumberOfWebWorkers": 2,
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": False,
        "showLoadingIndicator": True,
        "strictZSpacingForVolumeViewport": True,
        "defaultDataSourceName": "strata",
        "dataSources": [source],
    }
    return f"window.config = {json.dumps(config, indent=2)};\n".encode()


def serve(dist, config):
    """A static server of `dist` on a free port: unknown paths get index.html (OHIF routes in
    the page), app-config.js is ours."""

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=dist, **kwargs)

        def log_message(self, *args):
            pass

        def do_GET(self):
            path = urllib.parse.urlparse(self.path).path
            if path == "/app-config.js":
                body = config()
                self.send_response(200)
                self.send_header("Content-Type", "application/javascript")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            if not os.path.isfile(os.path.join(dist, path.lstrip("/"))):
                self.path = "/index.html"
            super().do_GET()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def canvas_stats(page):
    """Distinct RGB values and their range on the largest canvas with a drawing (the viewport,
    not a thumbnail)."""
    return page.evaluate(
        """() => {
            let best = null;
            for (const canvas of document.querySelectorAll('canvas')) {
                if (!canvas.width || !canvas.height) continue;
                if (best && canvas.width * canvas.height <= best.width * best.height) continue;
                let data;
                try {
                    data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
                } catch (e) { continue; }
                const seen = new Set();
                let lo = 255, hi = 0;
                for (let i = 0; i < data.length; i += 4 * 7) {
                    seen.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
                    lo = Math.min(lo, data[i]); hi = Math.max(hi, data[i]);
                }
                if (seen.size > 1) best = {width: canvas.width, height: canvas.height, distinct: seen.size, min: lo, max: hi};
            }
            return best;
        }"""
    )


def wait_for(what, probe, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.5)
    raise TimeoutError(f"{what}: not seen within {timeout} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dist", required=True, help="OHIF's dist folder")
    parser.add_argument("--shots", required=True, help="folder for screenshots")
    parser.add_argument("--patient", action="append", required=True,
                        help="a patient name the study list must show (as displayed)")
    parser.add_argument("--study", required=True, help="Study Instance UID to open")
    parser.add_argument("--user", help="user:password for HTTP Basic, if any")
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args()

    dicom_web = {}
    server = serve(args.dist, lambda: app_config(dicom_web["root"]))
    origin = f"http://127.0.0.1:{server.server_address[1]}"
    print(f"serving {origin}", flush=True)
    dicom_web["root"] = sys.stdin.readline().strip()
    os.makedirs(args.shots, exist_ok=True)

    failures, requests = [], []
    seen = {"study_list": [], "canvas": None}
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist"],
        )
        # With --user every request carries the credentials, as when a portal or an
        # authenticating proxy in front of the viewer adds them (OHIF itself would send an
        # OIDC bearer token): cross-origin XHRs do not answer a 401 challenge.
        headers = {}
        if args.user:
            headers["Authorization"] = "Basic " + base64.b64encode(args.user.encode()).decode()
        context = browser.new_context(viewport={"width": 1400, "height": 900}, extra_http_headers=headers)
        page = context.new_page()

        def on_response(response):
            if response.url.startswith(dicom_web["root"]):
                requests.append((response.request.method, response.url, response.status))
                if response.status >= 400:
                    failures.append(f"{response.status} for {response.request.method} {response.url}")

        page.on("response", on_response)
        page.on("console", lambda m: m.type == "error" and print(f"console: {m.text}", file=sys.stderr))
        page.on("pageerror", lambda e: print(f"page error: {e}", file=sys.stderr))
        try:
            page.goto(origin + "/", wait_until="domcontentloaded")
            for name in args.patient:
                page.get_by_text(name, exact=False).first.wait_for(timeout=args.timeout * 1000)
                seen["study_list"].append(name)
            page.screenshot(path=os.path.join(args.shots, "study-list.png"))

            page.goto(f"{origin}/viewer?StudyInstanceUIDs={args.study}", wait_until="domcontentloaded")
            seen["canvas"] = wait_for("an image on a viewport canvas", lambda: (
                (s := canvas_stats(page)) and s["width"] >= 400 and s["distinct"] >= 16 and s) or None, args.timeout)
            time.sleep(1)
            page.screenshot(path=os.path.join(args.shots, "viewer.png"))
        except Exception as e:  # the screenshot of where it stopped helps more than the trace
            failures.append(f"{type(e).__name__}: {e}")
            page.screenshot(path=os.path.join(args.shots, "failure.png"))
        finally:
            browser.close()
    server.shutdown()
    kinds = sorted({urllib.parse.urlparse(u).path.split("/")[-1] if "/frames/" not in u else "frames"
                    for _, u, _ in requests})
    print(json.dumps({"seen": seen, "failures": failures, "requests": len(requests),
                      "request_kinds": kinds[:20]}), flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
