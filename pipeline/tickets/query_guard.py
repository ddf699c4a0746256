"""A query parameter that takes one value, given more than once, is a 422, not its last value silently.

Starlette keeps every value of a repeated query parameter and FastAPI hands a single-valued parameter the
last one, so ``/audit?action=a&action=b`` would filter by ``b`` alone and the caller would never know.
:func:`single_valued_query` runs before every route (an app-wide dependency, nothing in the OpenAPI
document) and refuses such a request with the usual validation body (``loc: ["query", <name>]``). List
parameters (``status``, ``hazard``: repeatable by design) are left alone.

Example:
    >>> from fastapi import Depends, FastAPI  # doctest: +SKIP
    >>> app = FastAPI(dependencies=[Depends(single_valued_query)])  # doctest: +SKIP
"""

from __future__ import annotations

from collections import Counter

from fastapi import Request
from fastapi._compat import field_annotation_is_sequence
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute


def _single_valued(dependant: Dependant) -> set[str]:
    """Aliases of the query parameters of ``dependant`` (and its sub-dependencies) that take one value."""
    out = {f.alias for f in dependant.query_params if not field_annotation_is_sequence(f.field_info.annotation)}
    for sub in dependant.dependencies:
        out |= _single_valued(sub)
    return out


async def single_valued_query(request: Request) -> None:
    """Refuse (422) a request that repeats a single-valued query parameter of its route.

    Raises:
        RequestValidationError: one error per repeated parameter.
    """
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not request.query_params:
        return
    counts = Counter(k for k, _ in request.query_params.multi_items())
    repeated = sorted({k for k, n in counts.items() if n > 1} & _single_valued(route.dependant))
    if repeated:
        raise RequestValidationError([{"loc": ("query", name), "type": "value_error", "input": None,
                                       "msg": f"Value error, {name!r} takes one value; it was given more than once"}
                                      for name in repeated])


__all__ = ["single_valued_query"]
