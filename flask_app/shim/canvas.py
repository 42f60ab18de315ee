"""Canvas (`celery.canvas`): signatures, chain, group and chord over QStash.

Everything is a `Signature` (a dict, so it travels in a task message as JSON):

- a chain is sent as its first step; the message carries the remaining steps (`chain`, the next
  one last, as Celery's protocol 2 does), and the run that succeeds publishes the next step with
  its return value prepended (unless the next step is immutable);
- a group publishes its members at once and returns a `GroupResult`;
- a chord writes one `task_chords` row (size, member ids, body), then publishes the header
  members; each member that finishes counts once in the database, and the one that completes
  the count publishes the body with the members' values, or fails it with `ChordError`
  (see `flask_app.shim.chords`).

Ids are frozen when the canvas is sent, so the result handles (`AsyncResult` with `.parent`
links, `GroupResult`) exist at once, as in Celery.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from flask_app.shim import _state, backend
from flask_app.shim.binding import flask_app_for
from flask_app.shim.exceptions import NotRegistered, UnsupportedOption
from flask_app.shim.ids import uuid
from flask_app.shim.result import AsyncResult, GroupResult

if TYPE_CHECKING:
    from flask_app.shim.app import Celery
    from flask_app.shim.result import EagerResult
    from flask_app.shim.task import Task

#: Options a frozen canvas sets on its steps (read by the delivery, not by the task).
CANVAS_OPTIONS = ("chain", "group_id", "group_index", "chord")


class Signature(dict[str, Any]):
    """A call description (`task.s()`, `task.si()`, `signature(...)`): task, args, options."""

    def __init__(
        self,
        task: Any = None,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        type: Any = None,  # noqa: A002 - Celery's name
        subtask_type: str | None = None,
        immutable: bool = False,
        app: Celery | None = None,
        **ex: Any,
    ) -> None:
        self._app = app
        if isinstance(task, Mapping):
            super().__init__(task)
            self["args"] = list(self.get("args") or ())
            self["kwargs"] = dict(self.get("kwargs") or {})
            self["options"] = dict(self.get("options") or {})
            self.setdefault("immutable", False)
            self.setdefault("subtask_type", None)
            return
        name = task if isinstance(task, str) or task is None else task.name
        super().__init__(
            task=name,
            args=list(args or ()),
            kwargs=dict(kwargs or {}),
            options=dict(options or {}) | ex,
            subtask_type=subtask_type,
            immutable=immutable,
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], app: Celery | None = None) -> Signature:
        """The signature (or chain/group/chord) a dict describes."""
        if isinstance(d, Signature):
            return d
        kind = _KINDS.get(d.get("subtask_type") or "")
        if kind is None:
            if d.get("subtask_type"):
                raise UnsupportedOption(f"canvas type {d['subtask_type']!r} is not supported")
            return Signature(d, app=app)
        return kind.from_dict(d, app=app)

    # -- fields ------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The task name."""
        return str(self["task"])

    task = name

    @property
    def args(self) -> tuple[Any, ...]:
        """Partial positional arguments."""
        return tuple(self["args"])

    @args.setter
    def args(self, value: Sequence[Any]) -> None:
        self["args"] = list(value)

    @property
    def kwargs(self) -> dict[str, Any]:
        """Partial keyword arguments (the dict itself)."""
        kwargs: dict[str, Any] = self["kwargs"]
        return kwargs

    @property
    def options(self) -> dict[str, Any]:
        """apply_async options (the dict itself, as in Celery)."""
        options: dict[str, Any] = self["options"]
        return options

    @property
    def immutable(self) -> bool:
        """Whether parent results are *not* prepended."""
        return bool(self["immutable"])

    @property
    def subtask_type(self) -> str | None:
        """None for a task; "chain", "group" or "chord"."""
        kind: str | None = self.get("subtask_type")
        return kind

    @property
    def id(self) -> str | None:
        """The frozen task id, if any."""
        task_id: str | None = self.options.get("task_id")
        return task_id

    @property
    def app(self) -> Celery:
        """The app this signature sends through."""
        return self._app or _state.get_current_app()

    @property
    def type(self) -> Task[Any, Any]:
        """The registered task.

        Raises:
            NotRegistered
        """
        task = self.app.tasks.get(self.name)
        if task is None:
            raise NotRegistered(self.name)
        return task

    # -- building ----------------------------------------------------------------------------

    def _merge(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> tuple[tuple[Any, ...], dict[str, Any], dict[str, Any]]:
        """Partial args go first, kwargs and options override; immutable keeps args/kwargs."""
        merged_options = self.options | dict(options or {})
        if self.immutable:
            return self.args, dict(self.kwargs), merged_options
        return tuple(args or ()) + self.args, self.kwargs | dict(kwargs or {}), merged_options

    def clone(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **opts: Any,
    ) -> Signature:
        """A copy with more partial arguments and options (options deep-copied)."""
        new_args, new_kwargs, new_options = self._merge(args, kwargs, opts)
        if self.subtask_type:  # steps, members, header and body are copied too
            new_kwargs = copy.deepcopy(new_kwargs)
        data = dict(self) | {
            "args": list(new_args),
            "kwargs": new_kwargs,
            "options": copy.deepcopy(new_options),
        }
        return type(self).from_dict(data, app=self._app)

    partial = clone

    def set(self, immutable: bool | None = None, **options: Any) -> Signature:
        """Set options (in place); returns self."""
        if immutable is not None:
            self["immutable"] = immutable
        self.options.update(options)
        return self

    def set_immutable(self, immutable: bool) -> None:
        """Make the signature (im)mutable."""
        self["immutable"] = immutable

    def freeze(
        self,
        _id: str | None = None,
        group_id: str | None = None,
        chord: str | None = None,
        root_id: str | None = None,
        parent_id: str | None = None,
        group_index: int | None = None,
    ) -> Any:
        """Fix the task id (and canvas options) now; returns the result handle."""
        options = self.options
        task_id = options.setdefault("task_id", _id or uuid())
        if root_id:
            options["root_id"] = root_id
        if parent_id:
            options["parent_id"] = parent_id
        if group_id and "group_id" not in options:
            options["group_id"] = group_id
        if chord:
            options["chord"] = chord
        if group_index is not None:
            options["group_index"] = group_index
        return AsyncResult(task_id, task_name=self.name, app=self._app)

    def link(self, callback: Signature) -> Signature:
        """Run callback after success; returns the callback."""
        self.options["link"] = [*_as_list(self.options.get("link")), callback]
        return callback

    def link_error(self, errback: Signature) -> Signature:
        """Run errback after failure; returns the errback."""
        self.options["link_error"] = [*_as_list(self.options.get("link_error")), errback]
        return errback

    def on_error(self, errback: Signature) -> Signature:
        """link_error that returns self (for chaining)."""
        self.link_error(errback)
        return self

    # -- calling -----------------------------------------------------------------------------

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        """Send the described call (partial args first)."""
        options = {k: v for k, v in options.items() if v is not None}
        merged_args, merged_kwargs, merged_options = self._merge(args, kwargs, options)
        return self.type.apply_async(merged_args, merged_kwargs, **merged_options)

    def delay(self, *args: Any, **kwargs: Any) -> Any:
        """apply_async with star arguments."""
        return self.apply_async(args, kwargs)

    def apply(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        """Run the described call locally (eager)."""
        options = {k: v for k, v in options.items() if v is not None}
        merged_args, merged_kwargs, merged_options = self._merge(args, kwargs, options)
        for key in CANVAS_OPTIONS:
            merged_options.pop(key, None)
        return self.type.apply(merged_args, merged_kwargs, **merged_options)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        merged_args, merged_kwargs, _ = self._merge(args, kwargs)
        return self.type(*merged_args, **merged_kwargs)

    def __invert__(self) -> Any:
        return self.apply_async().get()

    def __or__(self, other: Any) -> Signature:  # type: ignore[override]
        if isinstance(other, chain):
            return chain(self, *other.tasks, app=self._app)
        if isinstance(other, group):
            return chain(self, _unroll(other), app=self._app)
        if isinstance(other, Signature):
            return chain(self, other, app=self._app)
        return NotImplemented

    def __ior__(self, other: Any) -> Signature:  # type: ignore[override]
        return self.__or__(other)

    def __deepcopy__(self, memo: dict[int, Any]) -> Signature:
        return type(self).from_dict(copy.deepcopy(dict(self), memo), app=self._app)

    def __repr__(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{self.name}({', '.join(parts)}){'!' if self.immutable else ''}"

    def __json__(self) -> dict[str, Any]:
        return dict(self)


class _Composite(Signature):
    """What chain and group share: their signatures in `kwargs["tasks"]`, and the app of the
    first of them when none was given."""

    @property
    def tasks(self) -> list[Signature]:
        """The steps (chain) or members (group), in order."""
        tasks: list[Signature] = self["kwargs"]["tasks"]
        return tasks

    @property
    def app(self) -> Celery:
        """The app given, else the first signature's, else the current one."""
        if self._app is not None:
            return self._app
        return self.tasks[0].app if self.tasks else _state.get_current_app()


class chain(_Composite):  # noqa: N801 - Celery's name
    """Steps run one after another, each receiving the previous one's return value."""

    def __init__(self, *tasks: Any, **options: Any) -> None:
        app = options.pop("app", None)
        if len(tasks) == 1 and _is_iterable_of_tasks(tasks[0]):
            tasks = tuple(tasks[0])
        steps = [maybe_signature(t, app=app) for t in tasks]
        super().__init__(
            "celery.chain", (), {"tasks": steps}, options, subtask_type="chain", app=app
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], app: Celery | None = None) -> chain:
        """A chain from its dict form."""
        sig = cls(*d["kwargs"]["tasks"], app=app, **d.get("options", {}))
        sig["args"], sig["immutable"] = list(d.get("args") or ()), bool(d.get("immutable"))
        return sig

    @property
    def name(self) -> str:
        """celery.chain."""
        return "celery.chain"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs) if self.tasks else None

    def __or__(self, other: Any) -> Signature:  # type: ignore[override]
        steps = [t.clone() for t in self.tasks]
        if isinstance(other, group):
            other = _unroll(other)
        if isinstance(other, chain):
            return chain(*steps, *other.tasks, app=self._app)
        if not isinstance(other, Signature):
            return NotImplemented
        if steps and isinstance(steps[-1], group) and not isinstance(other, group):
            steps[-1] = chord(steps[-1], body=other, app=self._app)  # group | task -> chord
        elif steps and isinstance(steps[-1], chord) and not isinstance(other, chord | group):
            last = steps[-1]
            last.body = last.body | other  # chord | task: the task joins the chord's body
        else:
            steps.append(other)
        return chain(*steps, app=self._app, **self.options)

    def _steps(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> list[Signature]:
        """Flattened, cloned steps; the first one gets the partial args; group|x -> chord."""
        steps = [s.clone() for s in _flatten(self.tasks)]
        if not steps:
            return []
        if not self.immutable:
            steps[0] = steps[0].clone(args, kwargs)
        for sig in _as_list(self.options.get("link")):
            steps[-1].link(maybe_signature(sig, app=self._app))
        for sig in _as_list(self.options.get("link_error")):
            for step in steps:
                step.link_error(maybe_signature(sig, app=self._app))
        out: list[Signature] = []
        for step in steps:
            if out and isinstance(out[-1], group):
                out[-1] = chord(out[-1], body=step, app=self._app)
            else:
                out.append(step)
        return out

    def freeze(
        self,
        _id: str | None = None,
        group_id: str | None = None,
        chord: str | None = None,
        root_id: str | None = None,
        parent_id: str | None = None,
        group_index: int | None = None,
    ) -> Any:
        """Freeze every step (the last one gets _id and the group/chord options)."""
        steps = self._steps((), {}) if self.tasks else []
        self["kwargs"]["tasks"] = steps
        results = _freeze_steps(steps, _id, group_id, chord, group_index, root_id)
        return results[0] if results else None

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        """Send the first step; the others follow as each one succeeds."""
        options = {k: v for k, v in options.items() if v is not None}
        if self.app.conf.task_always_eager:
            return self.apply(args, kwargs, **options)
        args = tuple(args or ()) + self.args if not self.immutable else self.args
        options = self.options | options
        for key in ("link", "link_error"):
            options.pop(key, None)
        steps = self._steps(args, kwargs or {})
        if not steps:
            return None
        results = _freeze_steps(
            steps,
            options.pop("task_id", None),
            options.pop("group_id", None),
            options.pop("chord", None),
            options.pop("group_index", None),
            options.get("root_id"),
        )
        rest = list(options.pop("chain", None) or []) + [dict(s) for s in reversed(steps[1:])]
        if rest:
            options["chain"] = rest
        first = steps[0].apply_async(**options)
        return first if len(steps) == 1 else results[0]

    def apply(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        """Run every step here, in order (eager)."""
        last: Any = None
        call_args: Sequence[Any] | None = args
        call_kwargs: Mapping[str, Any] | None = kwargs
        for step in self._steps((), {}):
            if last is not None:
                call_args, call_kwargs = (last.get(),), None
            result = step.clone().apply(call_args, call_kwargs, **options)
            result.parent, last = last, result
            if getattr(result, "state", None) in ("IGNORED", "REJECTED"):
                break
        return last

    def __repr__(self) -> str:
        return " | ".join(repr(t) for t in self.tasks) if self.tasks else "celery.chain()"


class group(_Composite):  # noqa: N801 - Celery's name
    """Tasks sent at once; the result is a GroupResult of their results, in order."""

    def __init__(self, *tasks: Any, **options: Any) -> None:
        app = options.pop("app", None)
        if len(tasks) == 1:
            only = tasks[0]
            if isinstance(only, group):
                tasks = tuple(only.tasks)
            elif isinstance(only, Signature):
                tasks = (only.clone(),)
            elif _is_iterable_of_tasks(only):
                tasks = tuple(only)
        members = [maybe_signature(t, app=app) for t in tasks]
        super().__init__(
            "celery.group", (), {"tasks": members}, options, subtask_type="group", app=app
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], app: Celery | None = None) -> group:
        """A group from its dict form."""
        sig = cls(list(d["kwargs"]["tasks"]), app=app, **d.get("options", {}))
        sig["immutable"] = bool(d.get("immutable"))
        return sig

    @property
    def name(self) -> str:
        """celery.group."""
        return "celery.group"

    def __len__(self) -> int:
        return len(self.tasks)

    def __call__(self, *partial_args: Any, **options: Any) -> Any:
        return self.apply_async(partial_args, **options)

    def __or__(self, other: Any) -> Signature:  # type: ignore[override]
        if isinstance(other, group) and not other.tasks:
            return self
        return chord(self, body=other, app=self._app)  # group | task -> chord

    def freeze(
        self,
        _id: str | None = None,
        group_id: str | None = None,
        chord: str | None = None,
        root_id: str | None = None,
        parent_id: str | None = None,
        group_index: int | None = None,
    ) -> GroupResult:
        """Fix the group id and every member's id."""
        gid = self.options.setdefault("task_id", _id or uuid())
        results = []
        for index, member in enumerate(self.tasks):
            _check_member(member)
            results.append(
                member.freeze(
                    group_id=gid,
                    chord=chord,
                    root_id=root_id,
                    parent_id=parent_id,
                    group_index=index,
                )
            )
        return GroupResult(gid, results, app=self._app)

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        link: Any = None,
        link_error: Any = None,
        **options: Any,
    ) -> GroupResult:
        """Send every member now.

        Raises:
            TypeError: link/link_error (use a chord, or link the members), as in Celery.
        """
        if link is not None:
            raise TypeError("Cannot add link to group: use a chord")
        if link_error is not None:
            raise TypeError("Cannot add link to group: do that on individual tasks")
        options = {k: v for k, v in options.items() if v is not None}
        if self.app.conf.task_always_eager:
            return self.apply(args, kwargs, **options)
        chord_id = options.pop("chord", None)
        result = self.freeze(
            options.pop("task_id", None),
            chord=chord_id,
            root_id=options.get("root_id"),
            parent_id=options.get("parent_id"),
        )
        for key in ("chain", "group_id", "group_index"):
            options.pop(key, None)  # a group is the last step of its chain (else a chord)
        for member in self.tasks:
            member.apply_async(args, kwargs, **options)
        return result

    def apply(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> GroupResult:
        """Run every member here (eager)."""
        gid = self.options.get("task_id") or uuid()
        results = [m.clone().apply(args, kwargs, **options) for m in self.tasks]
        return GroupResult(gid, results, app=self._app)

    def __repr__(self) -> str:
        return f"group([{', '.join(repr(t) for t in self.tasks)}])"


class chord(Signature):  # noqa: N801 - Celery's name
    """A header group and a body run with the list of the header's values (fan-in)."""

    def __init__(
        self,
        header: Any,
        body: Any = None,
        task: str = "celery.chord",
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        app: Celery | None = None,
        **options: Any,
    ) -> None:
        if not isinstance(header, group):
            header = (
                group.from_dict(header, app=app)
                if isinstance(header, Mapping)
                else group(header, app=app)
            )
        body_sig = maybe_signature(body, app=app) if body is not None else None
        super().__init__(
            task,
            args,
            {"header": header, "body": body_sig},
            options,
            subtask_type="chord",
            app=app,
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], app: Celery | None = None) -> chord:
        """A chord from its dict form."""
        kw = d["kwargs"]
        return cls(kw["header"], kw.get("body"), app=app, **d.get("options", {}))

    @property
    def tasks(self) -> group:
        """The header group."""
        header: group = self["kwargs"]["header"]
        return header

    header = tasks

    @property
    def body(self) -> Signature:
        """The body (callback)."""
        body: Signature = self["kwargs"]["body"]
        return body

    @body.setter
    def body(self, value: Signature) -> None:
        self["kwargs"]["body"] = value

    @property
    def app(self) -> Celery:
        """The app of the chord (or of its body/header)."""
        if self._app is not None:
            return self._app
        if self.body is not None:
            return self.body.app
        return self.tasks.app

    @property
    def name(self) -> str:
        """celery.chord."""
        return "celery.chord"

    def __call__(self, body: Any = None, **options: Any) -> Any:
        return self.apply_async((), {"body": body} if body else {}, **options)

    def __or__(self, other: Any) -> Signature:  # type: ignore[override]
        if isinstance(other, Signature) and not isinstance(other, group | chain):
            sig = self.clone()
            assert isinstance(sig, chord)
            sig.body = sig.body | other
            return sig
        return super().__or__(other)

    def freeze(
        self,
        _id: str | None = None,
        group_id: str | None = None,
        chord: str | None = None,
        root_id: str | None = None,
        parent_id: str | None = None,
        group_index: int | None = None,
    ) -> Any:
        """Fix the header's and the body's ids; the body's result has the header as parent."""
        _check_body(self.body)
        header = self.tasks
        gid = header.options.setdefault("task_id", uuid())
        header_result = header.freeze(gid, chord=gid, root_id=root_id, parent_id=parent_id)
        body_result = self.body.freeze(
            _id, group_id=group_id, chord=chord, root_id=root_id, group_index=group_index
        )
        _root_of(body_result).parent = header_result
        return body_result

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        task_id: str | None = None,
        **options: Any,
    ) -> Any:
        """Record the chord, send the header; the last member to finish sends the body."""
        kwargs = dict(kwargs or {})
        body = maybe_signature(kwargs.pop("body", None) or self.body, app=self._app)
        if body is None:
            raise TypeError("a chord needs a body: chord(header)(body) or chord(header, body)")
        options = {k: v for k, v in options.items() if v is not None}
        if self.app.conf.task_always_eager:
            return self.apply(args, kwargs, body=body, **options)
        args = tuple(args or ()) + self.args if not self.immutable else self.args
        return self._run(body.clone(), args, task_id, self.options | options)

    def _run(
        self, body: Signature, args: Sequence[Any], task_id: str | None, options: dict[str, Any]
    ) -> Any:
        _check_body(body)
        if options.get("chain"):  # the rest of an outer chain continues after the body
            body.options["chain"] = options.pop("chain")
        options.pop("task_id", None)
        header = self.tasks.clone()
        assert isinstance(header, group)
        gid = header.options.setdefault("task_id", uuid())
        body_result = body.freeze(
            task_id or body.id,
            group_id=options.pop("group_id", None),
            chord=options.pop("chord", None),
            group_index=options.pop("group_index", None),
            root_id=options.get("root_id"),
        )
        header_result = header.freeze(gid, chord=gid, root_id=options.get("root_id"))
        if any(isinstance(r, GroupResult) for r in header_result.results):
            raise UnsupportedOption("a chord header member that ends in a group is not supported")
        _root_of(body_result).parent = header_result
        if not header.tasks:
            body.apply_async(([],), root_id=options.get("root_id"))
            return body_result
        backend.create_chord(
            flask_app_for(self.app),
            gid,
            member_ids=[r.id for r in header_result.results],
            body=dict(body),
        )
        for member in header.tasks:
            member.apply_async(args, **options)
        return body_result

    def apply(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        propagate: bool = True,
        body: Signature | None = None,
        **options: Any,
    ) -> EagerResult:
        """Run the header here, then the body with its values (eager)."""
        body = body if body is not None else self.body
        values = self.tasks.clone().apply(args, kwargs).get(propagate=propagate)
        result: EagerResult = body.clone().apply((values,), **options)
        return result

    def __repr__(self) -> str:
        return f"chord({self.tasks!r}, {self.body!r})"


_KINDS: dict[str, type[Signature]] = {"chain": chain, "group": group, "chord": chord}


def signature(varies: Any, *args: Any, **kwargs: Any) -> Signature:
    """`celery.signature`: from a dict (a copy), a Signature (a clone) or a task name."""
    if isinstance(varies, Signature):
        return varies.clone()
    if isinstance(varies, Mapping):
        return Signature.from_dict(copy.deepcopy(dict(varies)), app=kwargs.get("app"))
    return Signature(varies, *args, **kwargs)


def maybe_signature(value: Any, app: Celery | None = None) -> Any:
    """A Signature for a dict (None stays None)."""
    if value is None or isinstance(value, Signature):
        return value
    if isinstance(value, Mapping):
        return Signature.from_dict(value, app=app)
    raise TypeError(f"expected a signature (task.s()), not {value!r}")


def maybe_signatures(value: Any) -> list[Signature]:
    """link/link_error values as a list of Signatures.

    Raises:
        TypeError: something that is not a signature.
    """
    return [maybe_signature(item) for item in _as_list(value)]


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, Mapping):
        return [value]
    if isinstance(value, list | tuple):
        return list(value)
    raise TypeError(f"link/link_error takes signatures (task.s()), not {value!r}")


def _is_iterable_of_tasks(value: Any) -> bool:
    return not isinstance(value, Mapping | str) and isinstance(value, Iterable)


def _unroll(g: group) -> Signature:
    """A group of one member is that member (Celery's group unrolling)."""
    return g.tasks[0].clone() if len(g.tasks) == 1 else g


def _flatten(tasks: Iterable[Signature]) -> Iterator[Signature]:
    for task in tasks:
        if isinstance(task, chain):
            yield from _flatten(task.tasks)
        elif isinstance(task, group):
            unrolled = _unroll(task)
            if isinstance(unrolled, group) and not unrolled.tasks:
                continue
            yield unrolled
        else:
            yield task


def _freeze_steps(
    steps: list[Signature],
    last_id: str | None,
    group_id: str | None,
    chord_id: str | None,
    group_index: int | None,
    root_id: str | None,
) -> list[Any]:
    """Freeze from the last step back; each result's parent is the step before. Last first."""
    results: list[Any] = []
    previous: Any = None
    for position, step in enumerate(reversed(steps)):
        if position == 0:
            result = step.freeze(
                last_id, group_id=group_id, chord=chord_id, group_index=group_index, root_id=root_id
            )
        else:
            result = step.freeze(root_id=root_id)
        if previous is not None and previous.parent is None:
            previous.parent = result
        results.append(result)
        previous = _root_of(result) if isinstance(step, chord) else result
    return results


def _root_of(result: Any) -> Any:
    node = result
    while node.parent is not None:
        node = node.parent
    return node


def _check_member(member: Signature) -> None:
    if isinstance(member, group | chord):
        raise UnsupportedOption(
            f"a {member.subtask_type} inside a group is not supported by the shim "
            "(use tasks or chains as members)"
        )


def _check_body(body: Signature | None) -> None:
    if body is None:
        raise TypeError("a chord needs a body")
    if isinstance(body, group | chord):
        raise UnsupportedOption(
            f"a {body.subtask_type} as a chord body is not supported by the shim "
            "(use a task or a chain)"
        )
