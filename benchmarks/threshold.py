"""Where threads start to pay: one step of each optimizer, 1 thread vs all.

Prints, per size, the median time per step serial and threaded and their
ratio; the kernel's threading threshold (etakit._core.parallel_min) should
sit where the ratio crosses 1.  Run: python benchmarks/threshold.py
"""

import etakit
from etakit import _core, bench


def main():
    threads = etakit.get_num_threads()
    print(bench.machine_line())
    print(f"{'optimizer':<9} {'n':>8} {'1 thread us':>12} {f'{threads} threads us':>12} {'speed-up':>9}")
    for name in ("SGD", "Adam", "Adagrad"):
        for n in (2048, 4096, 8192, 16384, 32768, 65536, 131072):
            case = bench.Case(name, [n])
            step = case.etakit_step()
            times = {}
            for nth, par_min in ((1, 0), (threads, 1)):
                etakit.set_num_threads(nth)
                _core.set_parallel_min(par_min)
                times[nth] = bench.measure({"s": step}, repeats=7, min_time=0.02)["s"]
            etakit.set_num_threads(threads)
            _core.set_parallel_min(0)
            print(f"{name:<9} {n:>8} {times[1] * 1e6:>12.2f} {times[threads] * 1e6:>12.2f} "
                  f"{times[1] / times[threads]:>9.2f}")


if __name__ == "__main__":
    main()
