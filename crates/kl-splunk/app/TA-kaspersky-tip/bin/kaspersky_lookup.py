# kl: Kaspersky Threat Intelligence Portal lookups for Splunk.
# Copyright (C) the kl developers. GPL-3.0-or-later; see LICENSE.
"""Splunk external lookup: runs bin/kl-splunk beside this file.

Splunk runs this script as `kaspersky_lookup.py <function> <input field>`
with a CSV on stdin and reads the filled CSV from stdout. Whatever goes
wrong (the binary missing, a configuration error, a crash, a timeout), the
CSV goes back as it came, with empty outputs, the reason goes to stderr
(Splunk writes it to search.log), and the exit status is 0: a search never
breaks on this lookup.

Python 3 (Splunk ships 3.7 and 3.9), standard library only.
"""

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
BINARY = os.path.join(HERE, "kl-splunk")
DEFAULT_TIMEOUT_SECS = 300.0


def _timeout():
    try:
        value = float(os.environ.get("KL_SHIM_TIMEOUT_SECS", ""))
        if value > 0:
            return value
    except ValueError:
        pass
    return DEFAULT_TIMEOUT_SECS


def main():
    data = sys.stdin.buffer.read()
    try:
        if not os.path.isfile(BINARY):
            raise RuntimeError("%s is missing" % BINARY)
        proc = subprocess.run(
            [BINARY] + sys.argv[1:],
            input=data,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            timeout=_timeout(),
        )
        if proc.stderr:
            sys.stderr.write(proc.stderr.decode("utf-8", "replace"))
        if proc.returncode != 0:
            raise RuntimeError("kl-splunk exited with status %s" % proc.returncode)
        if not proc.stdout:
            raise RuntimeError("kl-splunk wrote nothing")
        sys.stdout.buffer.write(proc.stdout)
    except subprocess.TimeoutExpired:
        sys.stderr.write("kaspersky lookup: kl-splunk did not finish within %.0f s; rows returned without Kaspersky fields\n" % _timeout())
        sys.stdout.buffer.write(data)
    except Exception as e:  # a search must never break on this lookup
        sys.stderr.write("kaspersky lookup: %s; rows returned without Kaspersky fields\n" % e)
        sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
