"""The demo workload `make demo` records: a small "web service" doing three kinds of work.

It runs until killed. The split of CPU between the handlers is fixed by construction, so the
flame graph has a known shape: render_template ~50%, parse_json ~30%, checksum ~20%.
"""
import json
import threading
import time


def render_template(items):
    out = []
    for item in items:
        out.append("<li>%s: %d</li>" % (item["name"], item["count"]))
    return "".join(out)


def parse_json(text):
    return json.loads(text)


def checksum(data):
    total = 0
    for byte in data:
        total = (total * 31 + byte) & 0xFFFFFFFF
    return total


def spend(seconds, work, *args):
    end = time.process_time() + seconds
    while time.process_time() < end:
        work(*args)


def handle_request(items, text, data):
    spend(0.05, render_template, items)
    spend(0.03, parse_json, text)
    spend(0.02, checksum, data)


def background_flusher(stop):
    while not stop.is_set():
        stop.wait(0.5)


def main():
    items = [{"name": "item%d" % i, "count": i} for i in range(200)]
    text = json.dumps(items)
    data = text.encode()
    stop = threading.Event()
    threading.Thread(target=background_flusher, args=(stop,), name="flusher", daemon=True).start()
    while True:
        handle_request(items, text, data)


if __name__ == "__main__":
    main()
