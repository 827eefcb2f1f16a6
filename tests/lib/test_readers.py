#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The console and QMP readers of tests/lib never act on a line that
has not finished arriving. Each test feeds a real unix socket in pieces,
with pauses inside a line, the way a slow serial console or a large
QMP reply arrives."""

import json
import os
import socket
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import splitmem as sm  # noqa: E402
import tap  # noqa: E402


class Peer:
    """A listening unix socket; accept() gives the connected end."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="readers-")
        self.path = os.path.join(self.dir, "sock")
        self.lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.lsock.bind(self.path)
        self.lsock.listen(1)
        self.conn = None

    def accept(self):
        self.conn, _ = self.lsock.accept()
        return self.conn

    def close(self):
        for s in (self.conn, self.lsock):
            if s:
                s.close()
        os.unlink(self.path)
        os.rmdir(self.dir)


class SerialTest(unittest.TestCase):
    def setUp(self):
        self.peer = Peer()
        threading.Thread(target=self.peer.accept, daemon=True).start()
        self.con = sm.Serial(self.peer.path)
        sm.wait_for(lambda: self.peer.conn, 5, "accept")

    def tearDown(self):
        self.con.close()
        self.peer.close()

    def feed_later(self, pieces, pause=0.2):
        def run():
            for p in pieces:
                self.peer.conn.sendall(p.encode())
                time.sleep(pause)
        threading.Thread(target=run, daemon=True).start()

    def test_anchored_number_waits_for_newline(self):
        # The bug of issue 8: 'runs=2' of 'runs=231' matched.
        self.feed_later(["kpagedump: end runs=2", "31", "\n"])
        m = self.con.wait(r"^kpagedump: end runs=(\d+)$", timeout=5)
        self.assertEqual(m.group(1), "231")

    def test_greedy_field_waits_for_newline(self):
        self.feed_later(["splitmem-guest: up, kernel 6.1.0-5", "7-amd64\n"])
        m = self.con.wait(r"kernel (\S+)", timeout=5)
        self.assertEqual(m.group(1), "6.1.0-57-amd64")

    def test_partial_line_times_out(self):
        self.peer.conn.sendall(b"memfill: verify OK 640")
        with self.assertRaises(TimeoutError):
            self.con.wait(r"memfill: verify OK \d+", timeout=0.5)
        self.peer.conn.sendall(b" MiB\n")
        m = self.con.wait(r"memfill: verify OK (\d+)", timeout=5)
        self.assertEqual(m.group(1), "640")

    def test_mark_skips_earlier_lines(self):
        self.peer.conn.sendall(b"tag=1\n")
        self.con.wait(r"^tag=1$", timeout=5)
        self.con.mark()
        self.feed_later(["tag=", "2\n"])
        self.assertEqual(self.con.wait(r"^tag=(\d)$", timeout=5).group(1),
                         "2")


class QmpTest(unittest.TestCase):
    """A fake QMP server that sends its messages in pieces."""

    def setUp(self):
        self.peer = Peer()
        self.script = []
        self.done = threading.Event()

    def tearDown(self):
        self.done.wait(5)
        self.qmp.close()
        self.peer.close()

    def serve(self, after_caps):
        def run():
            conn = self.peer.accept()
            conn.sendall(b'{"QMP": {"version": {}, "capabilities": []}}\n')
            conn.settimeout(5)
            f = conn.makefile("rb")
            json.loads(f.readline())
            conn.sendall(b'{"return": {}}\n')
            for piece, pause in after_caps:
                if piece is None:
                    json.loads(f.readline())
                else:
                    conn.sendall(piece)
                time.sleep(pause)
            self.done.set()
        threading.Thread(target=run, daemon=True).start()
        self.qmp = sm.QMP(self.peer.path, timeout=5)

    def test_event_split_across_a_timeout(self):
        ev = json.dumps({"event": "SPLIT_SUBHOST_LOST",
                         "data": {"id": "sub1" * 2000}}).encode() + b"\n"
        # Half an event, then a pause longer than the first wait.
        self.serve([(ev[:100], 0.8), (ev[100:], 0)])
        with self.assertRaises(TimeoutError):
            self.qmp.wait_event("SPLIT_SUBHOST_LOST", timeout=0.3)
        got = self.qmp.wait_event("SPLIT_SUBHOST_LOST", timeout=5)
        self.assertEqual(got["data"]["id"], "sub1" * 2000)

    def test_reply_in_pieces(self):
        reply = json.dumps({"return": {"status": "completed"}}).encode()
        self.serve([(None, 0)] + [(reply[i:i + 7], 0.02)
                                  for i in range(0, len(reply), 7)]
                   + [(b"\n", 0)])
        self.assertEqual(self.qmp.cmd("query-migrate"),
                         {"status": "completed"})


if __name__ == "__main__":
    tap.main()
