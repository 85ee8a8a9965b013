"""The Responses API's stream events, made from OpenAI chat completion chunks (any provider's, or the
cache's): ``response.created``, ``response.in_progress``, then per output item
``response.output_item.added``, ``response.content_part.added``, ``response.output_text.delta`` (or
``response.function_call_arguments.delta``) ... their ``.done`` events, and ``response.completed``
(``response.incomplete`` when the output was cut) with the usage. Pure: the caller writes the events."""

from __future__ import annotations

from typing import Any

from pilothouse.gateway.responses_format import finish, function_call, output_text, response_shell

Event = tuple[str, dict[str, Any]]


class ResponsesStreamEncoder:
    """Feeds on chat chunks, returns the Responses events each one makes; ``response`` is the Response
    object so far (complete after :meth:`finish`)."""

    def __init__(self, body: dict[str, Any], response_id: str, created: int) -> None:
        self.response = response_shell(body, response_id, created, "in_progress")
        self._base = response_id.removeprefix("resp_")
        self._sequence = 0
        self._text: dict[str, Any] | None = None  # the open message item
        self._reasoning: dict[str, Any] | None = None  # the open reasoning item
        self._calls: dict[int, dict[str, Any]] = {}  # open function call items by their chunk index
        self._finish_reason: Any = None
        self._usage: Any = None

    def _event(self, kind: str, **fields: Any) -> Event:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return kind, event

    def start(self) -> list[Event]:
        """The events that open the stream."""
        return [
            self._event("response.created", response=dict(self.response)),
            self._event("response.in_progress", response=dict(self.response)),
        ]

    def _add(self, item: dict[str, Any]) -> tuple[int, Event]:
        self.response["output"].append(item)
        index = len(self.response["output"]) - 1
        return index, self._event("response.output_item.added", output_index=index, item=dict(item))

    def feed(self, chunk: dict[str, Any]) -> list[Event]:
        """The events of one chat chunk."""
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        choices = chunk.get("choices") or []
        if not choices:
            return []
        choice = choices[0]
        if choice.get("finish_reason"):
            self._finish_reason = choice["finish_reason"]
        delta = choice.get("delta") or {}
        events: list[Event] = []
        thought = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(thought, str) and thought:
            events += self._reasoning_delta(thought)
        text = delta.get("content")
        if isinstance(text, str) and text:
            events += self._close_reasoning()
            if self._text is None:
                item = {
                    "type": "message",
                    "id": f"msg_{self._base}",
                    "status": "in_progress",
                    "role": "assistant",
                    "content": [],
                }
                index, added = self._add(item)
                self._text = {"item": item, "index": index, "text": []}
                part = output_text("")
                events += [
                    added,
                    self._event(
                        "response.content_part.added",
                        item_id=item["id"],
                        output_index=index,
                        content_index=0,
                        part=part,
                    ),
                ]
            self._text["text"].append(text)
            events.append(
                self._event(
                    "response.output_text.delta",
                    item_id=self._text["item"]["id"],
                    output_index=self._text["index"],
                    content_index=0,
                    delta=text,
                    logprobs=[],
                )
            )
        for call in delta.get("tool_calls") or []:
            events += self._call_delta(call)
        return events

    def _reasoning_delta(self, thought: str) -> list[Event]:
        """Reasoning text (``reasoning_content`` of OpenAI-compatible servers) as a reasoning item's
        summary."""
        events: list[Event] = []
        if self._reasoning is None:
            item = {"type": "reasoning", "id": f"rs_{self._base}", "summary": []}
            index, added = self._add(item)
            self._reasoning = {"item": item, "index": index, "text": []}
            part = {"type": "summary_text", "text": ""}
            common = {"item_id": item["id"], "output_index": index, "summary_index": 0}
            events += [added, self._event("response.reasoning_summary_part.added", **common, part=part)]
        state = self._reasoning
        state["text"].append(thought)
        common = {"item_id": state["item"]["id"], "output_index": state["index"], "summary_index": 0}
        return [*events, self._event("response.reasoning_summary_text.delta", **common, delta=thought)]

    def _close_reasoning(self) -> list[Event]:
        if self._reasoning is None:
            return []
        item, index = self._reasoning["item"], self._reasoning["index"]
        part = {"type": "summary_text", "text": "".join(self._reasoning["text"])}
        item["summary"] = [part]
        self._reasoning = None
        common = {"item_id": item["id"], "output_index": index, "summary_index": 0}
        return [
            self._event("response.reasoning_summary_text.done", **common, text=part["text"]),
            self._event("response.reasoning_summary_part.done", **common, part=part),
            self._event("response.output_item.done", output_index=index, item=dict(item)),
        ]

    def _call_delta(self, call: dict[str, Any]) -> list[Event]:
        position = call.get("index", 0) if isinstance(call.get("index"), int) else 0
        function = call.get("function") or {}
        events: list[Event] = []
        state = self._calls.get(position)
        if state is None:
            events += self._close_reasoning() + self._close_text()
            number = len(self._calls)
            item = function_call(
                f"fc_{self._base}_{number}",
                str(call.get("id") or f"call_{self._base}_{number}"),
                {"name": function.get("name")},
                "in_progress",
            )
            index, added = self._add(item)
            state = self._calls[position] = {"item": item, "index": index}
            events.append(added)
        elif function.get("name") and not state["item"]["name"]:
            state["item"]["name"] = str(function["name"])
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            state["item"]["arguments"] += arguments
            events.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=state["item"]["id"],
                    output_index=state["index"],
                    delta=arguments,
                )
            )
        return events

    def _close_text(self) -> list[Event]:
        if self._text is None:
            return []
        item, index = self._text["item"], self._text["index"]
        part = output_text("".join(self._text["text"]))
        item["content"] = [part]
        item["status"] = "completed"
        self._text = None
        common = {"item_id": item["id"], "output_index": index, "content_index": 0}
        return [
            self._event("response.output_text.done", **common, text=part["text"], logprobs=[]),
            self._event("response.content_part.done", **common, part=part),
            self._event("response.output_item.done", output_index=index, item=dict(item)),
        ]

    def _close_calls(self) -> list[Event]:
        events = []
        for state in self._calls.values():
            item = state["item"]
            item["status"] = "completed"
            events += [
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=state["index"],
                    name=item["name"],
                    arguments=item["arguments"],
                ),
                self._event("response.output_item.done", output_index=state["index"], item=dict(item)),
            ]
        self._calls = {}
        return events

    def finish(self) -> list[Event]:
        """The events that close every open item and the response (``response.completed``)."""
        events = self._close_reasoning() + self._close_text() + self._close_calls()
        finish(self.response, self._finish_reason, self._usage)
        kind = "response.incomplete" if self.response["status"] == "incomplete" else "response.completed"
        return [*events, self._event(kind, response=self.response)]

    def fail(self, code: str | None, message: str) -> list[Event]:
        """The events of a stream that failed after it began: ``error``, then ``response.failed``."""
        self.response["status"] = "failed"
        self.response["error"] = {"code": code or "server_error", "message": message}
        return [
            self._event("error", code=code, message=message, param=None),
            self._event("response.failed", response=self.response),
        ]
