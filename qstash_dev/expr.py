"""Safe evaluation of `Upstash-Retry-Delay` expressions (milliseconds, variable `retried`).

Only numbers, the variable `retried`, + - * / % **, unary minus and the functions QStash
documents are allowed; everything else is rejected before evaluation (no `eval`).
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable

from qstash_dev.errors import BadRequest

_BINARY: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_FUNCTIONS: dict[str, Callable[..., float]] = {
    "pow": lambda a, b: float(a) ** float(b),
    "sqrt": math.sqrt,
    "abs": abs,
    "exp": math.exp,
    "floor": math.floor,
    "ceil": math.ceil,
    "round": round,
    "min": min,
    "max": max,
}


def compile_expression(text: str) -> ast.expr:
    """Parse and validate an expression.

    Raises:
        BadRequest: the text is not a valid retry-delay expression.
    """
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise BadRequest(f"invalid retry delay expression: {text!r}") from exc
    _check(tree.body, text)
    return tree.body


def evaluate(text: str, retried: int) -> float:
    """Evaluate the expression for the given retry number and return milliseconds (>= 0).

    Raises:
        BadRequest: the expression is invalid or cannot be computed.
    """
    try:
        return max(0.0, float(_eval(compile_expression(text), retried)))
    except (ArithmeticError, ValueError, TypeError) as exc:
        raise BadRequest(f"cannot evaluate retry delay {text!r}: {exc}") from exc


def _check(node: ast.expr, text: str) -> None:
    """Reject any node outside the whitelist."""
    ok = (
        (isinstance(node, ast.Constant) and type(node.value) in (int, float))
        or (isinstance(node, ast.Name) and node.id == "retried")
        or (isinstance(node, ast.BinOp) and type(node.op) in _BINARY)
        or (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd))
        or _is_allowed_call(node)
    )
    if not ok:
        raise BadRequest(f"invalid retry delay expression: {text!r}")
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.expr) and not (isinstance(node, ast.Call) and child is node.func):
            _check(child, text)


def _is_allowed_call(node: ast.expr) -> bool:
    """A call of a whitelisted function by name, positional arguments only."""
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCTIONS
        and not node.keywords
    )


def _eval(node: ast.expr, retried: int) -> float:
    """Evaluate a validated node."""
    if isinstance(node, ast.Constant):
        assert isinstance(node.value, int | float)
        return float(node.value)
    if isinstance(node, ast.Name):
        return float(retried)
    if isinstance(node, ast.BinOp):
        left, right = _eval(node.left, retried), _eval(node.right, retried)
        if isinstance(node.op, ast.Pow) and abs(right) > 1000:
            raise ValueError("exponent too large")
        return _BINARY[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp):
        value = _eval(node.operand, retried)
        return -value if isinstance(node.op, ast.USub) else value
    assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    args = [_eval(a, retried) for a in node.args]
    return float(_FUNCTIONS[node.func.id](*args))
