# -*- coding: utf-8 -*-
# kl: Kaspersky Threat Intelligence Portal lookups for DNIF.
# Copyright (C) the kl developers. GPL-3.0-or-later; see LICENSE.
"""DNIF lookup plugin: the seven Kaspersky TIP functions.

Each function takes DNIF's ``inward_array`` (a list of event dicts) and
``var_array`` (whose first item names the field holding the indicator),
pipes the indicators once through ``bin/kl-dnif`` beside this file, and
adds the ``$KL`` fields it returns to each event, in place. The list is
also returned.

Whatever goes wrong (no binary, a crash, a timeout, unreadable output),
the events are returned unchanged and one warning is logged: the plugin
never loses or corrupts an event.

Runs on Python 2.7 and 3.x with the standard library only.
"""

from __future__ import absolute_import

import datetime
import decimal
import json
import logging
import numbers
import os
import subprocess
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
BINARY = os.path.join(HERE, "bin", "kl-dnif")
CONFIG = os.path.join(HERE, "dnifconfig.yml")

# Seconds one call may take before the binary is stopped. Generous, since
# kl-dnif bounds its own run (KL_DEADLINE_SECS, 300 by default); set
# KL_SHIM_TIMEOUT_SECS in DNIF's environment to change it.
DEFAULT_TIMEOUT_SECS = 900.0

log = logging.getLogger(__name__)


def _timeout():
    raw = os.environ.get("KL_SHIM_TIMEOUT_SECS", "")
    try:
        value = float(raw)
        if value > 0:
            return value
    except ValueError:
        pass
    return DEFAULT_TIMEOUT_SECS


def _jsonable(value):
    """Turns what JSON cannot carry into something it can."""
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, (set, frozenset)):
        return [_jsonable(v) for v in value]
    return repr(value)


def _safe(value):
    """A copy of value that json.dumps accepts on Python 2 and 3."""
    if isinstance(value, dict):
        return dict((_text(k), _safe(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return [_safe(v) for v in value]
    if isinstance(value, decimal.Decimal):
        return str(value)
    if value is None or isinstance(value, (bool, numbers.Integral, numbers.Real)):
        return value
    try:
        text_type = unicode  # noqa: F821 (Python 2)
    except NameError:
        text_type = str
    if isinstance(value, text_type):
        return value
    return _jsonable(value)


def _text(key):
    if isinstance(key, bytes):
        return key.decode("utf-8", "replace")
    return key if isinstance(key, str) else "%s" % (key,)


def _is_kl(key):
    """Whether an event key is one of ours ($KL...), on Python 2 and 3."""
    try:
        return key.startswith("$KL")
    except (AttributeError, TypeError):
        return False


def _field_name(var_array):
    if not var_array:
        raise ValueError("no field given: call it as _lookup kaspersky <function> $Field")
    return _text(var_array[0]).strip()


def _run(function, inward_array, var_array):
    try:
        field = _field_name(var_array)
        # Only the indicator goes to the binary: nothing else of the event
        # leaves DNIF's process, and no event value can break the encoding.
        batch = []
        for event in inward_array:
            if isinstance(event, dict) and field in event:
                batch.append({field: _safe(event[field])})
            else:
                batch.append({})
        payload = json.dumps(batch).encode("utf-8")
        if not os.path.isfile(BINARY):
            raise RuntimeError("%s is missing" % BINARY)
        args = [BINARY]
        if os.path.isfile(CONFIG):
            args += ["--config", CONFIG]
        args += [function, field]
        proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        timed_out = []

        def stop():
            timed_out.append(True)
            try:
                proc.kill()
            except OSError:
                pass

        timer = threading.Timer(_timeout(), stop)
        timer.start()
        try:
            out, err = proc.communicate(payload)
        finally:
            timer.cancel()
        if timed_out:
            raise RuntimeError("kl-dnif did not finish within %.0f s" % _timeout())
        if proc.returncode != 0:
            detail = err.decode("utf-8", "replace").strip()[-500:]
            raise RuntimeError("kl-dnif exited with status %s: %s" % (proc.returncode, detail))
        enriched = json.loads(out.decode("utf-8"))
        if not isinstance(enriched, list) or len(enriched) != len(inward_array):
            raise RuntimeError("kl-dnif returned something other than one event per event")
        updates = []
        for event, result in zip(inward_array, enriched):
            if not isinstance(result, dict):
                raise RuntimeError("kl-dnif returned a non-object event")
            updates.append((event, dict((k, v) for k, v in result.items() if k.startswith("$KL"))))
    except Exception as e:  # the pipeline must never lose events to the plugin
        log.warning("kaspersky %s: events returned unchanged: %s", function, e)
        return inward_array
    for event, fields in updates:
        if isinstance(event, dict) and fields:
            # An event's $KL fields are exactly its own lookup's: fields of
            # an earlier stage, or planted by the log source, go first.
            for key in [k for k in event if _is_kl(k)]:
                del event[key]
            event.update(fields)
    return inward_array


def get_ip_report(inward_array, var_array):
    """Zone, categories, WHOIS and DNS resolutions of an IPv4 address."""
    return _run("get_ip_report", inward_array, var_array)


def get_ip_report_file(inward_array, var_array):
    """URLs hosted on an IPv4 address and files downloaded from it."""
    return _run("get_ip_report_file", inward_array, var_array)


def get_url_report(inward_array, var_array):
    """Zone, categories, referrals, resolutions and WHOIS of a URL."""
    return _run("get_url_report", inward_array, var_array)


def get_url_report_file(inward_array, var_array):
    """Files that accessed a URL and files downloaded from it."""
    return _run("get_url_report_file", inward_array, var_array)


def get_domain_report(inward_array, var_array):
    """Zone, categories, resolutions, referrals, subdomains and WHOIS of a domain."""
    return _run("get_domain_report", inward_array, var_array)


def get_domain_report_file(inward_array, var_array):
    """Files that accessed a domain and files downloaded from it."""
    return _run("get_domain_report_file", inward_array, var_array)


def get_hash_report(inward_array, var_array):
    """Zone, detections, names and accessed URLs of a file hash (MD5, SHA-1 or SHA-256)."""
    return _run("get_hash_report", inward_array, var_array)
