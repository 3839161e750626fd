"""One cold start, run by `benchmarks.measure` as `python -c <this file's text>` in a fresh interpreter.

argv: result path, module to import, ready steps ("module:function=argument", comma-separated;
the clock is read after each), first-call hook ("module:function" or ""), repository root. Nothing
is imported before the timed part but `sys` and `time` (both built in); json is imported only once
the clock has stopped.
"""

import sys
import time


def _resolve(path):
    module_name, _, attribute = path.partition(":")
    target = __import__(module_name, fromlist=["_"])
    for part in filter(None, attribute.split(".")):
        target = getattr(target, part)
    return target


def main():
    result_path, module_name, ready, first_call, root = sys.argv[1:6]
    clock, cpu = time.perf_counter, time.process_time
    # Where `-X importtime` output stops being the interpreter's own start-up.
    sys.stderr.write("bench: timed import starts\n")
    sys.stderr.flush()
    cpu_started, started = cpu(), clock()
    __import__(module_name)
    imported, cpu_imported = clock(), cpu()
    steps, cpu_steps = [], []
    for step in filter(None, ready.split(",")):
        target, _, argument = step.partition("=")
        _resolve(target)(*([argument] if argument else []))
        steps.append(clock() - started)
        cpu_steps.append(cpu() - cpu_started)
    ready_at = clock()

    first_call_seconds = None
    if first_call:
        sys.path.append(root)  # the benchmark's own hooks, only now that the timed import is over
        call, check = _resolve(first_call)()
        began = clock()
        answer = call()
        first_call_seconds = clock() - began
        check(answer)

    import json  # noqa: PLC0415 -- only now: the timed part must find nothing preloaded

    with open(result_path, "w") as result:
        json.dump(
            {
                "import_s": imported - started,
                "steps_s": steps,
                # CPU time of the process over the same spans: what other processes cannot inflate.
                "cpu_import_s": cpu_imported - cpu_started,
                "cpu_steps_s": cpu_steps,
                "ready_s": ready_at - started,
                "first_call_s": first_call_seconds,
                "modules": len(sys.modules),
            },
            result,
        )


if __name__ == "__main__":  # `python -c` runs it as __main__
    main()
