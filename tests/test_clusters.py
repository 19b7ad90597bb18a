"""Cluster factory: jobqueue job scripts, local clusters, attaching to running schedulers."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlparse

import dask
import dask.array as da
import numpy as np
import pytest
import yaml
from dask.utils import parse_bytes
from dask_jobqueue import PBSCluster, SLURMCluster
from distributed import Client, LocalCluster, Scheduler, SpecCluster, Worker, get_worker

from zemosaic_dask.clusters import (
    ClusterError,
    ClusterOptions,
    build_jobqueue_cluster_kwargs,
    open_cluster,
    worker_resources,
)
from zemosaic_dask.config import describe_config
from zemosaic_dask.errors import ConfigError, GpuUnavailableError


def _job_script(cluster_cls: type, options: ClusterOptions) -> str:
    # rendering a job script starts a scheduler here: keep its dashboard off the shared port 8787
    cluster = cluster_cls(**build_jobqueue_cluster_kwargs(dataclasses.replace(options, dashboard_address=":0")))
    try:
        return cluster.job_script()
    finally:
        cluster.close()


def _directives(script: str, prefix: str) -> list[str]:
    return [line[len(prefix) :].strip() for line in script.splitlines() if line.startswith(prefix)]


def _worker_command(script: str) -> str:
    return next(line for line in script.splitlines() if " -m " in line)


@pytest.fixture
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- jobqueue keyword arguments and job scripts ------------------------------------------------


def test_slurm_cpu_job_script_has_the_requested_directives():
    options = ClusterOptions(
        kind="slurm",
        jobqueue={
            "cores": 2,
            "processes": 1,
            "memory": "4GiB",
            "walltime": "01:00:00",
            "queue": "astro",
            "account": "lab42",
            "job-extra-directives": ["--constraint=avx2"],
        },
    )
    script = _job_script(SLURMCluster, options)
    directives = _directives(script, "#SBATCH")
    assert "-p astro" in directives
    assert "-A lab42" in directives
    assert "--cpus-per-task=2" in directives
    assert "--mem=4G" in directives
    assert "-t 01:00:00" in directives
    assert "--constraint=avx2" in directives
    assert not any("gres" in d for d in directives)
    command = _worker_command(script)
    assert f"{sys.executable} -m distributed.cli.dask_worker" in command
    assert "GPU=1" not in command
    assert "--nthreads 2" in command and "--memory-limit 4.00GiB" in command


def test_slurm_gpu_job_script_requests_gres_and_runs_dask_cuda_workers():
    options = ClusterOptions(
        kind="slurm", jobqueue={"cores": 8, "memory": "32GiB"}, gpu_per_job=2, rmm_pool_size="20GB"
    )
    with dask.config.set({"jobqueue.slurm.job-extra-directives": ["--exclusive"]}):
        script = _job_script(SLURMCluster, options)
    directives = _directives(script, "#SBATCH")
    # the GPU request is added to the directives of the config section, not in place of them
    assert "--exclusive" in directives
    assert "--gres=gpu:2" in directives
    assert "--cpus-per-task=8" in directives
    command = _worker_command(script)
    assert f"{sys.executable} -m dask cuda worker" in command
    assert re.search(r"--resources GPU=1\b", command)
    assert "--rmm-pool-size 20GB" in command
    # one worker per GPU: the job's cores and memory are shared between the two workers
    assert "--nthreads 4" in command
    assert "--memory-limit 16.00GiB" in command


def test_pbs_gpu_job_script_adds_ngpus_to_the_default_resource_spec():
    jobqueue = {"cores": 4, "memory": "8GB", "queue": "gpuq"}
    cpu_script = _job_script(PBSCluster, ClusterOptions(kind="pbs", jobqueue=jobqueue))
    gpu_script = _job_script(PBSCluster, ClusterOptions(kind="pbs", jobqueue=jobqueue, gpu_per_job=1))
    cpu_select = next(d for d in _directives(cpu_script, "#PBS") if d.startswith("-l select="))
    assert "ngpus" not in cpu_select
    assert f"{cpu_select}:ngpus=1" in _directives(gpu_script, "#PBS")
    assert "-q gpuq" in _directives(gpu_script, "#PBS")
    assert "-m dask cuda worker" in _worker_command(gpu_script)
    assert "--resources GPU=1" in _worker_command(gpu_script)
    assert "-m distributed.cli.dask_worker" in _worker_command(cpu_script)


def test_jobqueue_options_merge_over_the_dask_config_section():
    config = {"jobqueue.slurm.cores": 3, "jobqueue.slurm.memory": "6GiB", "jobqueue.slurm.walltime": "02:00:00"}
    with dask.config.set(config):
        script = _job_script(SLURMCluster, ClusterOptions(kind="slurm", jobqueue={"memory": "1GiB"}))
    directives = _directives(script, "#SBATCH")
    assert "--cpus-per-task=3" in directives  # from the config
    assert "--mem=1G" in directives  # the option wins over the config
    assert "-t 02:00:00" in directives


def test_job_name_key_names_the_batch_job():
    options = ClusterOptions(kind="slurm", jobqueue={"cores": 1, "memory": "1GiB", "name": "zemosaic-worker"})
    assert "-J zemosaic-worker" in _directives(_job_script(SLURMCluster, options), "#SBATCH")


@pytest.mark.parametrize("kind", ["slurm", "pbs"])
def test_missing_cores_and_memory_teaches_the_config_keys(kind):
    with dask.config.set({f"jobqueue.{kind}.cores": None, f"jobqueue.{kind}.memory": None}):
        with pytest.raises(ConfigError) as info:
            build_jobqueue_cluster_kwargs(ClusterOptions(kind=kind, jobqueue={"cores": 4}))
    message = str(info.value)
    assert f"--cluster {kind} needs jobqueue.{kind}.cores and memory" in message
    assert "missing: memory" in message
    assert f"jobqueue: {{{kind}: {{cores: 8, memory: 24GB}}}}" in message


def test_unknown_jobqueue_key_is_named():
    options = ClusterOptions(kind="slurm", jobqueue={"cores": 1, "memory": "1GB", "walltme": "01:00:00"})
    with pytest.raises(ConfigError, match="unknown jobqueue.slurm key.*walltme.*walltime"):
        build_jobqueue_cluster_kwargs(options)


def test_gpu_jobs_need_a_core_per_gpu():
    options = ClusterOptions(kind="slurm", jobqueue={"cores": 1, "memory": "4GB"}, gpu_per_job=2)
    with pytest.raises(ConfigError, match=r"cores \(1\) must be >= gpu_per_job \(2\)"):
        build_jobqueue_cluster_kwargs(options)


@pytest.mark.parametrize(
    ("options", "pattern"),
    [
        (ClusterOptions(kind="kubernetes"), "cluster kind must be one of local, slurm, pbs, synchronous"),
        (ClusterOptions(scheduler="tcp://a:1", scheduler_file="s.json"), "not both"),
        (ClusterOptions(kind="slurm", scheduler="tcp://a:1"), "cannot attach to tcp://a:1"),
        (ClusterOptions(kind="slurm", gpus=1), "gpu_per_job"),
        (ClusterOptions(jobs=0), "jobs must be >= 1, got 0"),
    ],
)
def test_contradictory_options_are_refused(options, pattern):
    with pytest.raises(ConfigError, match=pattern):
        with open_cluster(options):
            pass


# --- local, synchronous and attached clusters ---------------------------------------------------


def test_local_threads_cluster_computes_and_closes():
    options = ClusterOptions(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0")
    with open_cluster(options) as handle:
        assert handle.kind == "local"
        x = np.arange(10_000, dtype=np.float64).reshape(100, 100)
        result = handle.client.compute(da.from_array(x, chunks=25).sum(axis=0)).result()
        np.testing.assert_array_equal(result, x.sum(axis=0))
        link = urlparse(handle.dashboard_link)
        assert link.scheme == "http" and link.port not in (None, 0)
        assert [w["nthreads"] for w in worker_resources(handle.client)] == [2]
    assert handle.client.status == "closed"
    assert handle.cluster.status.name == "closed"


def test_busy_dashboard_port_falls_back_to_a_free_one(free_port):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", free_port))
        busy.listen()
        options = ClusterOptions(processes=False, n_workers=1, dashboard_address=f"127.0.0.1:{free_port}")
        with open_cluster(options) as handle:
            port = urlparse(handle.dashboard_link).port
    assert port not in (None, 0, free_port)


def test_synchronous_runs_in_this_thread_without_a_client():
    with open_cluster(ClusterOptions(kind="synchronous")) as handle:
        assert handle.client is None and handle.dashboard_link is None
        idents = dask.delayed(threading.get_ident)().compute()
    assert idents == threading.get_ident()


@pytest.fixture
def running_cluster(tmp_path):
    scheduler_file = tmp_path / "scheduler.json"
    cluster = LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=False,
        dashboard_address=":0",
        scheduler_kwargs={"scheduler_file": str(scheduler_file)},
    )
    yield cluster, scheduler_file
    cluster.close()


def _assert_attached_and_left_running(options, cluster):
    with open_cluster(options) as handle:
        assert handle.kind == "attached" and handle.cluster is None
        assert handle.client.scheduler.address == cluster.scheduler_address
        assert handle.client.submit(pow, 3, 4).result() == 81
        assert urlparse(handle.dashboard_link).port == urlparse(cluster.dashboard_link).port
    # leaving the context closes our client, never the cluster we attached to
    with Client(cluster) as other:
        assert other.submit(pow, 2, 5).result() == 32


def test_attach_by_scheduler_address(running_cluster):
    cluster, _ = running_cluster
    _assert_attached_and_left_running(ClusterOptions(scheduler=cluster.scheduler_address), cluster)


def test_attach_by_scheduler_file(running_cluster):
    cluster, scheduler_file = running_cluster
    assert scheduler_file.exists()
    _assert_attached_and_left_running(ClusterOptions(scheduler_file=str(scheduler_file)), cluster)


def test_attach_waits_for_a_scheduler_file_written_later(running_cluster, tmp_path):
    cluster, scheduler_file = running_cluster
    late_file = tmp_path / "late" / "scheduler.json"
    late_file.parent.mkdir()
    timer = threading.Timer(0.5, shutil.copyfile, (scheduler_file, late_file))
    timer.start()
    try:
        with open_cluster(ClusterOptions(scheduler_file=str(late_file), connect_timeout=10)) as handle:
            assert handle.client.scheduler.address == cluster.scheduler_address
    finally:
        timer.cancel()


def test_scheduler_file_without_an_address_is_a_config_error(tmp_path):
    path = tmp_path / "scheduler.json"
    path.write_text("{}")
    with pytest.raises(ConfigError, match=rf"scheduler file {re.escape(str(path))} holds no scheduler address"):
        with open_cluster(ClusterOptions(scheduler_file=str(path), connect_timeout=0.3)):
            pass


def test_malformed_scheduler_address_is_a_config_error():
    with pytest.raises(ConfigError, match=r"scheduler address 'tcp://host:port' is not valid"):
        with open_cluster(ClusterOptions(scheduler="tcp://host:port")):
            pass


def test_unreachable_scheduler_names_the_address(free_port):
    address = f"tcp://127.0.0.1:{free_port}"
    with pytest.raises(ClusterError, match=rf"could not connect to scheduler {address} within 1 s"):
        with open_cluster(ClusterOptions(scheduler=address, connect_timeout=1)):
            pass


def test_missing_scheduler_file_names_the_file(tmp_path):
    path = tmp_path / "nowhere.json"
    with pytest.raises(ClusterError, match=rf"scheduler file {re.escape(str(path))}"):
        with open_cluster(ClusterOptions(scheduler_file=str(path), connect_timeout=0.5)):
            pass


def test_gpus_without_dask_cuda_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "dask_cuda", None)  # import fails as when it is not installed
    with pytest.raises(GpuUnavailableError) as info:
        with open_cluster(ClusterOptions(gpus=1, dashboard_address=":0")):
            pass
    assert "dask-cuda" in str(info.value)
    assert "pip install zemosaic-dask[gpu]" in str(info.value)


def test_worker_resources_reports_gpu_workers():
    workers = {
        "cpu": {"cls": Worker, "options": {"nthreads": 2, "memory_limit": "1GiB"}},
        "gpu": {"cls": Worker, "options": {"nthreads": 1, "memory_limit": "2GiB", "resources": {"GPU": 1}}},
    }
    scheduler = {"cls": Scheduler, "options": {"dashboard_address": ":0"}}
    with SpecCluster(workers=workers, scheduler=scheduler) as cluster, Client(cluster) as client:
        client.wait_for_workers(2)
        described = {w["name"]: w for w in worker_resources(client)}
        assert set(described) == {"cpu", "gpu"}
        assert described["gpu"]["resources"] == {"GPU": 1}
        assert described["cpu"]["resources"] == {}
        assert described["gpu"]["nthreads"] == 1 and described["cpu"]["nthreads"] == 2
        assert described["gpu"]["memory_limit"] == parse_bytes("2GiB")
        assert described["cpu"]["gpu_memory"] is None
        assert described["gpu"]["address"] == client.submit(lambda: get_worker().address, resources={"GPU": 1}).result()


# --- deploy/ assets ---------------------------------------------------------------------------------

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def _commented_block(text: str, marker: str) -> dict:
    """The YAML mapping written as comments right after ``marker`` (a commented-out variant)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if marker in line) + 1
    block = []
    for line in lines[start:]:
        stripped = line.strip()
        if not stripped.startswith("#"):
            break
        block.append(stripped[2:])
    return yaml.safe_load("\n".join(block))


@pytest.mark.parametrize(
    ("kind", "cluster_cls", "prefix"), [("slurm", SLURMCluster, "#SBATCH"), ("pbs", PBSCluster, "#PBS")]
)
def test_example_jobqueue_file_renders_cpu_and_gpu_job_scripts(kind, cluster_cls, prefix, tmp_path):
    text = (DEPLOY / "jobqueue.yaml").read_text()
    config = yaml.safe_load(text)
    section = config["jobqueue"][kind]
    logs = {"log-directory": str(tmp_path)}
    with dask.config.set(dask.config.merge(dask.config.config, config)):
        cpu = _job_script(cluster_cls, ClusterOptions(kind=kind, jobqueue=logs))
        gpu_variant = {**section, **_commented_block(text.split(f"  {kind}:")[1], "GPU variant"), **logs}
        gpu = _job_script(cluster_cls, ClusterOptions(kind=kind, jobqueue=gpu_variant))
    cpu_request = f"--cpus-per-task={section['cores']}" if kind == "slurm" else f"-l select=1:ncpus={section['cores']}:"
    assert any(d.startswith(cpu_request) for d in _directives(cpu, prefix))
    assert f"--nworkers {section['processes']}" in _worker_command(cpu)
    assert "-m distributed.cli.dask_worker" in _worker_command(cpu)
    gpu_request = "--gres=gpu:1" if kind == "slurm" else "ngpus=1"
    assert any(gpu_request in d for d in _directives(gpu, prefix))
    assert "-m dask cuda worker" in _worker_command(gpu)
    assert "--resources GPU=1" in _worker_command(gpu)


def test_example_user_config_is_valid():
    entries = {entry.key: entry for entry in describe_config(DEPLOY / "zemosaic.yaml")}
    assert entries["zemosaic.cluster.kind"].value == "slurm"
    assert entries["zemosaic.cluster.kind"].source.startswith("file:")
    jobqueue = yaml.safe_load((DEPLOY / "zemosaic.yaml").read_text())["jobqueue"]["slurm"]
    assert jobqueue["cores"] and jobqueue["memory"]


def test_compose_file_describes_scheduler_cpu_gpu_workers_and_client():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"scheduler", "worker-cpu", "worker-gpu", "client"}
    assert services["scheduler"]["command"][:2] == ["dask", "scheduler"]
    assert "8787:8787" in services["scheduler"]["ports"]
    assert services["worker-cpu"]["command"][:3] == ["dask", "worker", "tcp://scheduler:8786"]
    gpu = services["worker-gpu"]
    assert gpu["command"][:4] == ["dask", "cuda", "worker", "tcp://scheduler:8786"]
    assert "--resources=GPU=1" in gpu["command"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    client = services["client"]["command"]
    assert client[:2] == ["zemosaic-dask", "run"]
    assert client[client.index("--scheduler") + 1] == "tcp://scheduler:8786"
    for service in services.values():
        assert any(volume.endswith(":/data") for volume in service["volumes"])
        if "build" in service:
            assert (DEPLOY / service["build"]["context"] / service["build"]["dockerfile"]).is_file()


@pytest.mark.parametrize(
    "script",
    ["slurm/zemosaic-scheduler-file.sbatch", "slurm/zemosaic-scheduler-file-gpu.sbatch"],
)
def test_scheduler_file_recipes(script):
    path = DEPLOY / script
    subprocess.run(["bash", "-n", str(path)], check=True)
    text = path.read_text()
    assert re.search(r"^dask scheduler --scheduler-file ", text, re.MULTILINE)
    worker = "dask cuda worker" if "gpu" in script else "dask worker"
    assert re.search(rf"^\s+{worker} --scheduler-file ", text, re.MULTILINE)
    assert re.search(r'^zemosaic-dask run "\$@" --scheduler-file ', text, re.MULTILINE)
    assert ("--resources GPU=1" in text) == ("gpu" in script)
    assert ("--gres=gpu:" in text) == ("gpu" in script)


@pytest.mark.parametrize("script", ["install.sh", "start.sh", "stop.sh"])
def test_local_slurm_scripts_parse(script):
    path = DEPLOY / "local-slurm" / script
    assert os.access(path, os.X_OK)
    subprocess.run(["bash", "-n", str(path)], check=True)
