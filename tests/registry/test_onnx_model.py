"""ONNX Runtime sessions are sized for a server: workers share the cores, nobody spins."""

from __future__ import annotations

import os

from registry.onnx_model import session_options, threads_per_worker


def test_workers_share_the_cores_and_each_gets_at_least_one_thread():
    cores = os.cpu_count() or 1
    assert threads_per_worker(1) == cores
    assert threads_per_worker(cores) == 1
    assert threads_per_worker(cores * 4) == 1
    assert threads_per_worker(0) == cores


def test_session_options_fix_the_pools_and_disable_spinning():
    options = session_options(2)
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (2, 1)
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
