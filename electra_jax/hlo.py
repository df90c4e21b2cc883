"""What one run of a compiled program moves, between chips and to and from HBM, read from its
optimized HLO text.

XLA's cost analysis counts the body of a while loop once, whatever its trip count, and the
train step has loops: the scanned layers (model.scan_layers) and the gradient
microbatches (train.grad_accum_steps). Here each computation gets the number of times one
step runs it, from the trip counts of the loops that call it (a jax loop's condition
compares its counter with one integer constant), and the collectives' bytes are summed
with those counts. The HBM bytes follow XLA's own convention (every top-level
instruction reads its operands and writes its result; a fusion is one instruction):
on a program without loops they come within a few percent of XLA's "bytes accessed".
"""

from __future__ import annotations

import collections
import math
import re

_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s16": 2, "u16": 2, "f32": 4, "s32": 4, "u32": 4}
_DTYPE_BYTES.update({"f64": 8, "s64": 8, "u64": 8, "c64": 8, "c128": 16})
_ARRAY = re.compile(r"\b([a-z]+\d*(?:e\d+m\d+\w*)?)\[([\d,]*)\]")
_HEADER = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s+\(.*\{\s*$")
_INSTRUCTION = re.compile(r"^\s+(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(\(.*?\)|\S+)\s+([\w\-]+)\((.*)$")
_WHILE = re.compile(r"condition=%?([\w.\-]+), body=%?([\w.\-]+)")
_CALLED = re.compile(r"(?:calls|body|true_computation|false_computation)=%?([\w.\-]+)|branch_computations=\{([^}]*)\}")
_TRIP_CONSTANT = re.compile(r"s32\[\]\S*\s+constant\((\d+)\)")
_FUSED = re.compile(r"calls=%?([\w.\-]+)")
# Instructions that move no HBM bytes of their own: plumbing, control flow (their bodies
# are counted), the second half of an async pair (its start counted the bytes), and the
# prefetches into on-chip memory (copy-start), whose consumers XLA counts instead.
_NO_TRAFFIC = {"parameter", "constant", "tuple", "get-tuple-element", "bitcast", "while", "call", "conditional"}
_NO_TRAFFIC |= {"after-all", "partition-id", "replica-id", "opt-barrier", "add-dependency", "copy-start"}

# Collective kind -> the share of an all-reduce of the same bytes it costs: an all-reduce is
# a reduce-scatter then an all-gather; a permute or an all-to-all sends its bytes once.
COLLECTIVES = {
    "all-reduce": 1.0,
    "all-gather": 0.5,
    "reduce-scatter": 0.5,
    "all-to-all": 0.5,
    "collective-permute": 0.5,
}


def peak_bytes(memory) -> int:
    """Bytes a compiled program holds on one device at its peak, from its memory analysis:
    arguments, temporaries, outputs and code, with the donated buffers the outputs reuse
    (aliased) counted once."""
    held = memory.argument_size_in_bytes + memory.temp_size_in_bytes + memory.output_size_in_bytes
    return held + memory.generated_code_size_in_bytes - memory.alias_size_in_bytes


def shape_bytes(shape: str) -> int:
    """Bytes of an HLO shape, an array (`bf16[8,128]{1,0}`) or a tuple of them."""
    return sum(
        _DTYPE_BYTES.get(dtype, 1 if dtype.startswith("f8") else 4) * math.prod(int(d) for d in dims.split(",") if d)
        for dtype, dims in _ARRAY.findall(shape)
    )


def _instructions(lines: list[str]):
    """(result name, shape, op, operands text, line) of every instruction among `lines`."""
    for line in lines:
        instruction = _INSTRUCTION.match(line)
        if instruction:
            yield (*instruction.groups(), line)


def _split_computations(hlo_text: str) -> tuple[dict[str, list[str]], str]:
    computations, entry, current = {}, None, None
    for line in hlo_text.splitlines():
        header = _HEADER.match(line)
        if header and not line.startswith(" "):
            current = header.group(1)
            computations[current] = []
            if line.startswith("ENTRY"):
                entry = current
        elif line.startswith("}"):
            current = None
        elif current is not None:
            computations[current].append(line)
    if entry is None:
        raise ValueError("no ENTRY computation in the HLO text")
    return computations, entry


def _trip_count(condition: list[str]) -> int | None:
    constants = {int(value) for line in condition for value in _TRIP_CONSTANT.findall(line)}
    return constants.pop() if len(constants) == 1 else None


def multiplicities(hlo_text: str) -> tuple[dict[str, int], int]:
    """(computation -> times one run executes it, number of loops whose trip count was not
    found and counted once). Reducers (to_apply) and loop conditions are left out."""
    computations, entry = _split_computations(hlo_text)
    times: dict[str, int] = collections.Counter()
    unknown = 0
    pending = [(entry, 1)]
    while pending:
        name, count = pending.pop()
        times[name] += count
        for line in computations.get(name, ()):
            loop = _WHILE.search(line)
            if loop and " while(" in line:
                trips = _trip_count(computations.get(loop.group(1), []))
                unknown += trips is None
                pending.append((loop.group(2), count * (trips or 1)))
                continue
            for called, branches in _CALLED.findall(line):
                for callee in [called] if called else re.findall(r"%?([\w.\-]+)", branches):
                    pending.append((callee, count))
    return dict(times), unknown


def collective_bytes(hlo_text: str) -> dict[str, float]:
    """Bytes per kind of collective in one run, each loop body counted as often as it runs:
    all-gather its gathered result, every other kind its operands (for reduce-scatter the
    input, for collective-permute what it sends). Also `allreduce_equivalent`: the sum
    weighted by COLLECTIVES, to divide by a chip's all-reduce bandwidth; and
    `loops_of_unknown_trip_count`."""
    computations, _ = _split_computations(hlo_text)
    times, unknown = multiplicities(hlo_text)
    array_bytes = {}
    totals = dict.fromkeys(COLLECTIVES, 0.0)
    for name, lines in computations.items():
        for result, shape, op, operands, _ in _instructions(lines):
            array_bytes[result] = shape_bytes(shape)
            kind = op.removesuffix("-start")
            if kind not in COLLECTIVES or name not in times:
                continue
            if kind == "all-gather":  # the gathered result; an async start's shape is (inputs..., outputs...)
                arrays = _ARRAY.findall(shape)
                kept = arrays[len(arrays) // 2 :] if op.endswith("-start") else arrays
                moved = shape_bytes(" ".join(f"{dtype}[{dims}]" for dtype, dims in kept))
            else:
                moved = sum(array_bytes.get(n, 0) for n in re.findall(r"%([\w.\-]+)", operands.split(")")[0]))
            totals[kind] += moved * times[name]
    totals["allreduce_equivalent"] = sum(COLLECTIVES[kind] * totals[kind] for kind in COLLECTIVES)
    totals["loops_of_unknown_trip_count"] = unknown
    return totals


def _operand_names(operands: str) -> list[str]:
    return re.findall(r"%([\w.\-]+)", operands.split(")")[0])


def _fused_traffic(name: str, computations: dict[str, list[str]], cache: dict) -> tuple[dict[int, int], int | None]:
    """What the fusion body `name` really moves, where a scan makes it move less than its
    operands and result: ({parameter index: bytes read} for parameters it only slices
    (dynamic-slice, also inside a nested fusion) or updates in place (dynamic-update-slice),
    and the bytes written when its root updates a buffer in place (else None: the result)."""
    if name in cache:
        return cache[name]
    parameters, instructions, root, alias = {}, {}, None, {}
    for result, shape, op, operands, line in _instructions(computations.get(name, [])):
        callee = _FUSED.search(line) if op == "fusion" else None
        names = [alias.get(operand, operand) for operand in _operand_names(operands)]
        if names and names[0] in parameters and (op == "bitcast" or "output_to_operand_aliasing={{}: (0" in line):
            alias[result] = names[0]  # a view of the parameter, or an update of it in place
            continue
        instructions[result] = (op, names, shape_bytes(shape), callee and callee.group(1))
        if op == "parameter":
            parameters[result] = int(re.match(r"(\d+)", operands).group(1))
        if line.lstrip().startswith("ROOT"):
            root = result
    uses = collections.defaultdict(list)
    for op, operands, size, callee in instructions.values():
        for position, operand in enumerate(operands):
            uses[operand].append((op, position, size, callee))

    def sliced_read(op, position, size, callee) -> int | None:
        """Bytes one use reads of its operand at `position`, when it reads a slice."""
        if op == "dynamic-slice" and position == 0:
            return size
        if op == "dynamic-update-slice" and position == 0:
            return 0
        if op == "fusion" and callee:
            return _fused_traffic(callee, computations, cache)[0].get(position)
        return None

    reads = {}
    for parameter, index in parameters.items():
        parts = [sliced_read(*use) for use in uses[parameter]]
        if parts and all(part is not None for part in parts):
            reads[index] = sum(parts)

    def written(result: str) -> int:
        op, operands, size, _ = instructions[result]
        if op == "dynamic-update-slice" and operands[0] in parameters:
            return instructions[operands[1]][2]  # only the update reaches HBM
        return size

    if root is None:
        cache[name] = (reads, None)
    elif instructions[root][0] == "tuple":
        cache[name] = (reads, sum(written(element) for element in instructions[root][1]))
    else:
        cache[name] = (reads, written(root))
    return cache[name]


def hbm_bytes(hlo_text: str, count_loops: bool = True) -> float:
    """Bytes one run reads and writes in HBM: operands + result of every top-level
    instruction (not those inside a fusion), loop bodies counted as often as they run, and
    of a buffer a loop slices or updates in place only the slice."""
    computations, _ = _split_computations(hlo_text)
    times, _ = multiplicities(hlo_text)
    if not count_loops:  # every body once, as XLA's cost analysis counts
        times = dict.fromkeys(times, 1)
    # Bodies of fusions and async ops run inside their one instruction; a call's body is its own.
    fused = {
        callee
        for lines in computations.values()
        for line in lines
        if " call(" not in line
        for callee in _FUSED.findall(line)
    }
    cache: dict = {}
    traffic = {name: _fused_traffic(name, computations, cache) for name in fused if name in computations}
    total = 0.0
    for name, lines in computations.items():
        if name not in times or name in fused:
            continue
        array_bytes = {}
        for result, shape, op, operands, line in _instructions(lines):
            array_bytes[result] = shape_bytes(shape)
            if op in _NO_TRAFFIC or op.endswith("-done"):
                continue
            names = _operand_names(operands)
            reads = [array_bytes.get(n, 0) for n in names]
            write = array_bytes[result]
            if op == "dynamic-slice":
                reads[0] = write
            elif op == "dynamic-update-slice":
                reads[0], write = 0, reads[1]
            callee = _FUSED.search(line)
            if op == "fusion" and callee and callee.group(1) in traffic:
                sliced, in_place = traffic[callee.group(1)]
                reads = [sliced.get(i, size) for i, size in enumerate(reads)]
                write = write if in_place is None else in_place
            total += (sum(reads) + write) * times[name]
    return total
