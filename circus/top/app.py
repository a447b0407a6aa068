"""circus-top's terminal view (Textual): one section per watcher, a filter, sorting, the
output of the selected process, and keys that act on circusd after a confirmation."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Mapping
from typing import Any, ClassVar

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.css.query import NoMatches
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Footer, Header, Input, Label, RichLog, Sparkline

from circus.curve import ClientKeys
from circus.errors import CallError
from circus.top.feed import Feed, reply_error
from circus.top.model import COLUMN_KEYS, COLUMNS, ProcessRow, TopModel, WatcherInfo, summary

#: Columns that sort from the largest first when chosen.
DESCENDING = ("cpu", "rss", "mem", "age", "restarts")
#: The actions that change something in circusd (hidden and refused with --readonly).
CHANGES = ("restart", "stop_start", "incr", "decr", "kill")


class Confirm(ModalScreen[bool]):
    """A yes/no question; ``y`` or Enter on Yes confirms, ``n`` or Escape declines."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]
    DEFAULT_CSS = """
    Confirm { align: center middle; }
    Confirm > Vertical { width: 64; height: auto; border: thick $warning; padding: 1 2;
                         background: $surface; }
    Confirm Horizontal { height: auto; margin-top: 1; }
    Confirm Button { margin-right: 2; }
    """

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.question, id="question")
            with Horizontal():
                yield Button("Yes (y)", variant="warning", id="yes")
                yield Button("No (n)", variant="primary", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)

    @on(Button.Pressed)
    def pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


def _dom_id(name: str) -> str:
    return "w-" + re.sub(r"[^A-Za-z0-9_-]", lambda m: f"_{ord(m.group()):x}_", name)


class WatcherSection(Vertical):
    """One watcher: a title line, CPU and memory sparklines, and its processes."""

    DEFAULT_CSS = """
    WatcherSection { height: auto; margin-bottom: 1; }
    WatcherSection .title { height: 1; text-style: bold; }
    WatcherSection Horizontal { height: 1; }
    WatcherSection .spark-label { width: 5; }
    WatcherSection Sparkline { width: 1fr; height: 1; margin-right: 2; }
    WatcherSection DataTable { height: auto; max-height: 20; }
    """

    def __init__(self, name: str) -> None:
        super().__init__(id=_dom_id(name))
        self.watcher = name
        self.table: DataTable[str] = DataTable(cursor_type="row", zebra_stripes=True)
        self.title = Label(name, classes="title")
        self.cpu = Sparkline([], id=f"{_dom_id(name)}-cpu")
        self.rss = Sparkline([], id=f"{_dom_id(name)}-rss")

    def compose(self) -> ComposeResult:
        yield self.title
        with Horizontal():
            yield Label("CPU", classes="spark-label")
            yield self.cpu
            yield Label("MEM", classes="spark-label")
            yield self.rss
        yield self.table

    def on_mount(self) -> None:
        for key, title in COLUMNS:
            self.table.add_column(title, key=key)


class TopApp(App[None]):
    """The live view of a circusd."""

    TITLE = "circus-top"
    AUTO_FOCUS = "#sections"
    CSS = """
    #filter { display: none; }
    #filter.shown { display: block; }
    #info { height: 1; color: $text-muted; }
    #sections { height: 1fr; }
    #tail { height: 10; border-top: solid $primary; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("slash", "filter", "Filter"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
        Binding("o", "next_sort", "Sort"),
        Binding("O", "reverse_sort", "Reverse"),
        Binding("P", "sort('cpu')", "CPU", show=False),
        Binding("M", "sort('rss')", "Memory", show=False),
        Binding("T", "sort('age')", "Age", show=False),
        Binding("r", "restart", "Restart"),
        Binding("s", "stop_start", "Stop/start"),
        Binding("plus,equals_sign", "incr", "Incr"),
        Binding("minus", "decr", "Decr"),
        Binding("k", "kill", "Kill"),
    ]

    def __init__(self, stats_endpoint: str, control: str | None, *,
                 process_timeout: float = 3.0, readonly: bool = False,
                 status_interval: float = 2.0, refresh_interval: float = 1.0,
                 call_timeout: float = 5.0, keys: ClientKeys | None = None) -> None:
        super().__init__()
        self.stats_endpoint, self.control = stats_endpoint, control
        self.keys = keys
        self.readonly = readonly
        self.model = TopModel(process_timeout)
        self.status_interval = status_interval
        self.refresh_interval = refresh_interval
        self.call_timeout = call_timeout
        self.feed: Feed | None = None
        self.sort_key = "cpu"
        self.sort_reverse = True
        self.needle = ""
        self.selected: tuple[str, int] | None = None  # (watcher, pid) under the cursor
        self.sections: dict[str, WatcherSection] = {}
        self._tail_for: tuple[str, int] | None = None

    # -- layout and life ------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(placeholder="filter: watcher, pid, command or health (Esc clears)",
                    id="filter")
        yield Label("", id="info")
        yield VerticalScroll(id="sections")
        yield RichLog(id="tail", wrap=False, markup=False, highlight=False)
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = f"stats {self.stats_endpoint}" + (
            f" · control {self.control}" if self.control else "") + (
            " · read-only" if self.readonly else "")
        self.feed = Feed(self.stats_endpoint, self.control, self.call_timeout, self.keys)
        self.run_worker(self._read_stats(), exclusive=False, group="feed")
        if self.control:
            self.run_worker(self._poll_status(), exclusive=False, group="feed")
        self.set_interval(self.refresh_interval, self.redraw)
        self.redraw()

    async def on_unmount(self) -> None:
        self.workers.cancel_group(self, "feed")
        self.workers.cancel_group(self, "tail")
        if self.feed is not None:
            self.feed.close()

    async def _read_stats(self) -> None:
        assert self.feed is not None
        while True:
            topic, payload = await self.feed.next_stat()
            self.model.on_stat(topic, payload)

    async def _poll_status(self) -> None:
        while True:
            await self.refresh_status()
            if self.selected is not None:  # the output pane follows, at the same pace
                await self.show_tail()
            await asyncio.sleep(self.status_interval)

    async def refresh_status(self) -> None:
        assert self.feed is not None
        try:
            self.model.on_status(await self.feed.status())
        except CallError as exc:
            self.model.connection_lost(str(exc))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return not (self.readonly and action in CHANGES)  # False: hidden and refused

    # -- drawing --------------------------------------------------------------------------

    def redraw(self) -> None:
        self.model.expire()
        wanted = self.model.sections(self.needle, self.sort_key, self.sort_reverse)
        container = self.query_one("#sections", VerticalScroll)
        names = [info.name for info, _ in wanted]
        for name in list(self.sections):
            if name not in names:
                self.sections.pop(name).remove()
        for info, rows in wanted:
            section = self.sections.get(info.name)
            if section is None:
                section = self.sections[info.name] = WatcherSection(info.name)
                container.mount(section)
                self.call_after_refresh(self._fill, section, info, rows)
            else:
                self._fill(section, info, rows)
        self._draw_info()

    def _draw_info(self) -> None:
        title = dict(COLUMNS)[self.sort_key]
        text = f"sort: {title} {'▼' if self.sort_reverse else '▲'}"
        if self.needle:
            text += f"   filter: {self.needle!r}"
        if self.model.control_error:
            text += f"   circusd: {self.model.control_error}"
        elif not self.model.stats_seen:
            text += f"   waiting for figures on {self.stats_endpoint}"
        self.query_one("#info", Label).update(text)

    def _fill(self, section: WatcherSection, info: WatcherInfo, rows: list[ProcessRow]
              ) -> None:
        section.title.update(summary(info, rows))
        section.cpu.data = list(info.cpu_history)
        section.rss.data = list(info.rss_history)
        table = section.table
        if not table.columns:
            return
        keep = self.selected[1] if self.selected and self.selected[0] == info.name else None
        table.clear()
        for row in rows:
            table.add_row(*row.cells(), key=str(row.pid))
        if keep is not None:
            for index, row in enumerate(rows):
                if row.pid == keep:
                    table.move_cursor(row=index, scroll=False)
                    break

    # -- selection and tail ---------------------------------------------------------------

    @on(DataTable.RowHighlighted)
    def highlighted(self, event: DataTable.RowHighlighted) -> None:
        if not event.data_table.has_focus or event.row_key.value is None:
            return
        section = event.data_table.parent
        if isinstance(section, WatcherSection):
            self.selected = (section.watcher, int(event.row_key.value))
            self.refresh_tail()

    @on(DataTable.HeaderSelected)
    def header_clicked(self, event: DataTable.HeaderSelected) -> None:
        self.action_sort(str(event.column_key.value))

    def select(self, pid: int) -> bool:
        """Put the cursor on process *pid* (and the focus on its table)."""
        for name, section in self.sections.items():
            for index, key in enumerate(section.table.rows):
                if key.value == str(pid):
                    section.table.focus()
                    self.selected = (name, pid)
                    section.table.move_cursor(row=index)
                    self.refresh_tail()
                    return True
        return False

    def selected_row(self) -> ProcessRow | None:
        if self.selected is None:
            return None
        return self.model.rows.get(self.selected[0], {}).get(self.selected[1])

    def selected_watcher(self) -> str | None:
        if self.selected is not None:
            return self.selected[0]
        focused = self.focused
        if isinstance(focused, DataTable) and isinstance(focused.parent, WatcherSection):
            return focused.parent.watcher
        return None

    @work(exclusive=True, group="tail")
    async def refresh_tail(self) -> None:
        await self.show_tail()

    async def show_tail(self) -> None:
        try:
            log = self.query_one("#tail", RichLog)
        except NoMatches:  # the app is closing and its screen is gone; the feed stops next
            return
        row = self.selected_row()
        if row is None or self.feed is None or not self.control or row.name:
            return
        try:
            reply = await self.feed.tail(row.watcher, row.pid)
        except CallError as exc:
            log.clear()
            log.write(f"(no output: {exc})")
            return
        log.clear()
        log.border_title = f"output of {row.watcher} pid {row.pid}"
        error = reply_error(reply)
        if error:
            log.write(f"(no output: {error})")
            return
        lines = reply.get("lines") or []
        if not lines:
            log.write("(no output yet)")
        for line in lines:
            if isinstance(line, Mapping):
                log.write(str(line.get("line", "")))

    # -- keys -----------------------------------------------------------------------------

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.add_class("shown")
        box.focus()

    @on(Input.Changed, "#filter")
    def filter_changed(self, event: Input.Changed) -> None:
        self.needle = event.value
        self.redraw()

    @on(Input.Submitted, "#filter")
    def filter_done(self, event: Input.Submitted) -> None:
        self.query_one("#sections", VerticalScroll).focus()
        if not event.value:
            event.input.remove_class("shown")

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.value = ""
        box.remove_class("shown")
        self.needle = ""
        self.redraw()

    def action_sort(self, key: str) -> None:
        if key not in COLUMN_KEYS:
            return
        if key == self.sort_key:
            self.sort_reverse = not self.sort_reverse
        else:
            self.sort_key, self.sort_reverse = key, key in DESCENDING
        self.redraw()

    def action_next_sort(self) -> None:
        index = (COLUMN_KEYS.index(self.sort_key) + 1) % len(COLUMN_KEYS)
        self.sort_key = COLUMN_KEYS[index]
        self.sort_reverse = self.sort_key in DESCENDING
        self.redraw()

    def action_reverse_sort(self) -> None:
        self.sort_reverse = not self.sort_reverse
        self.redraw()

    def _confirm_then(self, question: str, command: str, done: str, **props: Any) -> None:
        def answered(yes: bool | None) -> None:
            if yes:
                self.act(command, done, **props)

        self.push_screen(Confirm(question), answered)

    @work(group="act")
    async def act(self, command: str, done: str, **props: Any) -> None:
        assert self.feed is not None
        try:
            reply = await self.feed.call(command, **props)
        except CallError as exc:
            self.notify(f"{command}: {exc}", severity="error")
            return
        error = reply_error(reply)
        if error:
            self.notify(f"{command}: {error}", severity="error")
        else:
            self.notify(done)
        with contextlib.suppress(CallError):
            await self.refresh_status()
        self.redraw()

    def _watcher_or_say(self) -> str | None:
        if not self.control:
            self.notify("no control endpoint (--control)", severity="error")
            return None
        name = self.selected_watcher()
        if name is None:
            self.notify("select a process first (arrow keys, Tab)", severity="warning")
        elif name not in self.model.watchers or self.model.watchers[name].state is None:
            self.notify(f"{name!r} is not a watcher of circusd", severity="warning")
            return None
        return name

    def action_restart(self) -> None:
        name = self._watcher_or_say()
        if name:
            self._confirm_then(f"Restart every process of {name}?", "restart",
                               f"{name} restarted", name=name)

    def action_stop_start(self) -> None:
        name = self._watcher_or_say()
        if name:
            stopped = self.model.watchers[name].state == "stopped"
            verb = "start" if stopped else "stop"
            self._confirm_then(f"{verb.capitalize()} {name}?", verb, f"{name}: {verb} sent",
                               name=name)

    def action_incr(self) -> None:
        name = self._watcher_or_say()
        if name:
            self._confirm_then(f"Add a process to {name}?", "incr", f"{name}: one more",
                               name=name)

    def action_decr(self) -> None:
        name = self._watcher_or_say()
        if name:
            self._confirm_then(f"Remove a process from {name}?", "decr", f"{name}: one fewer",
                               name=name)

    def action_kill(self) -> None:
        row = self.selected_row()
        if row is None:
            self.notify("select a process first (arrow keys, Tab)", severity="warning")
            return
        if row.name or self._watcher_or_say() is None:
            if row.name:
                self.notify(f"{row.name} is part of circus: not killed from here",
                            severity="warning")
            return
        self._confirm_then(f"Kill process {row.pid} of {row.watcher}? (the watcher "
                           "starts another)", "kill", f"{row.watcher}: {row.pid} killed",
                           name=row.watcher, pid=row.pid)

