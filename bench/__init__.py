"""The benchmark suite: workloads (gaussheat_gpu.workloads) against the baselines users have today.

``make bench`` (bench/run.py) runs the CPU suite, ``bench/gpu_bench.py`` runs G1 on a CUDA GPU.
"""
