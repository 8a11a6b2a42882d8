"""Chat templates, which are untrusted code: rendered and probed by bounded worker processes (`RenderPool`).

`Templates` renders a conversation through a model's template (adapted to what the template can take, probed
once and remembered), `/api/generate`'s prompt, and checks a template (at create and pull, so a hostile one is
reported then, not at the first chat). `render_template` is the one path from messages to a prompt: the daemon's
renders go through it with a `RenderPool`, the tests' and the benchmarks' with an `InlineRenderer`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..chat import prompt, thinking
from ..chat.renderpool import Renderer, RenderPool, RenderTooLong, TemplateSource
from ..chat.templatecaps import TemplateCaps
from ..domain import limits
from ..domain.errors import InvalidRequest, PromptTooLong
from ..domain.messages import ChatMessage, Tool
from ..modelstore.gguf import read_info
from ..modelstore.models import Model

ANY_TEMPLATE = TemplateSource("the chat template")  # a template named by no model or request (tests, tools)


class Templates:
    def __init__(self, renderer: Renderer | None = None) -> None:
        # tests of the unit tier pass an in-process renderer
        self.renderer = renderer or RenderPool()
        self._caps: dict[str, TemplateCaps] = {}  # what each template can take, by its text (probed once)

    async def close(self) -> None:
        await self.renderer.close()

    async def render(
        self,
        model: Model,
        messages: Sequence[ChatMessage],
        *,
        tools: Sequence[Tool] = (),
        template: str | None = None,
        n_ctx: int | None = None,
        field: str = "messages",
        extra: Mapping[str, Any] | None = None,
        think: thinking.Think = None,
    ) -> str:
        """The prompt for `messages` through the request's `template`, else the model's own (Modelfile or GGUF;
        the GGUF's `tool_use` variant when there are `tools`), adapted to what that template can take; `extra`
        template variables (e.g. `enable_thinking`) are passed through.

        Its output is bounded by what a context of `n_ctx` tokens can hold (past it: `PromptTooLong`), or with
        no `n_ctx` (the input may be cut to fit) by the bound on any prompt."""
        if template is not None:
            source = TemplateSource("the request's template", "template")
        else:
            template, label = model.template_for(tools=bool(tools))
            source = TemplateSource(label)
        return await self.render_template(
            messages,
            template=template,
            source=source,
            bos_token=model.info.bos_token,
            eos_token=model.info.eos_token,
            tools=tools,
            n_ctx=n_ctx,
            field=field,
            extra=extra,
            think=think,
        )

    async def render_template(
        self,
        messages: Sequence[ChatMessage],
        *,
        template: str | None,
        source: TemplateSource = ANY_TEMPLATE,
        bos_token: str = "",
        eos_token: str = "",
        tools: Sequence[Tool] = (),
        n_ctx: int | None = None,
        field: str = "messages",
        extra: Mapping[str, Any] | None = None,
        think: thinking.Think = None,
    ) -> str:
        """The prompt for `messages` through `template` (a plain transcript when there is none), adapted to what
        it can take (`prompt.chat_render`), rendered by the renderer and bounded as `render` says; errors name
        `source`."""
        caps = await self.caps(template, source) if template else None
        job = prompt.chat_render(
            messages,
            template=template,
            bos_token=bos_token,
            eos_token=eos_token,
            tools=tools,
            caps=caps,
            extra=extra,
            think=think,
        )
        if isinstance(job, str):
            return job
        max_bytes = limits.PROMPT_MAX_BYTES if n_ctx is None else limits.prompt_bytes(n_ctx)
        try:
            text = await self.renderer.render(job.template, job.variables, max_bytes=max_bytes, source=source)
        except RenderTooLong:
            if n_ctx is None or max_bytes == limits.PROMPT_MAX_BYTES:
                raise
            raise PromptTooLong(max_bytes, n_ctx, limits.BYTES_PER_TOKEN, field=field, rendered=True) from None
        return job.finish(text)

    async def caps(self, template: str, source: TemplateSource) -> TemplateCaps:
        """What `template` can take, probed once (in a render worker) and remembered by its text."""
        caps = self._caps.get(template)
        if caps is None:
            caps = await self.renderer.probe(template, source)
            if len(self._caps) >= 64:  # a bound: requests may bring their own templates
                self._caps.pop(next(iter(self._caps)))
            self._caps[template] = caps
        return caps

    async def capabilities(self, model: Model) -> list[str]:
        """`/api/show`'s capabilities, with `tools` as the probe finds it (not guessed from the template's text)."""
        caps = list(model.capabilities)
        template, label = model.template_for(tools=True)
        if "completion" not in caps or not template:
            return caps
        try:
            probed = await self.caps(template, TemplateSource(label))
        except InvalidRequest:  # a template that cannot even be probed takes no tools
            return [c for c in caps if c != "tools"]
        caps = [c for c in caps if c != "tools"]
        return [caps[0], "tools", *caps[1:]] if probed.tools else caps

    async def render_prompt(
        self,
        model: Model,
        text: str,
        *,
        system: str | None,
        template: str | None = None,
        n_ctx: int | None = None,
        extra: Mapping[str, Any] | None = None,
        think: thinking.Think = None,
    ) -> str:
        """`/api/generate`'s prompt: through the chat template when there is one, else as given."""
        if template is None and not model.template:
            return prompt.render_generate(text, system=system)
        messages = prompt.generate_messages(text, system=system)
        return await self.render(
            model, messages, template=template, n_ctx=n_ctx, field="prompt", extra=extra, think=think
        )

    async def check_template(self, template: str, source: TemplateSource) -> None:
        """Refuse a template that does not compile, or exceeds a bound on a short conversation (at create and
        pull, so that a hostile one is reported then, not at the first chat)."""
        await self.renderer.check(template, source)
        sample = [ChatMessage("system", "s"), ChatMessage("user", "u"), ChatMessage("assistant", "a")]
        job = prompt.chat_render([*sample, ChatMessage("user", "u")], template=template)
        if not isinstance(job, str):
            try:
                await self.renderer.render(job.template, job.variables, max_bytes=1 << 20, source=source)
            except InvalidRequest as exc:
                if "exceeded a bound" in str(exc):
                    raise
                # Any other error (raise_exception on roles it does not take) is the template's own business.

    async def check_gguf_template(self, path: Path, label: str) -> None:
        """Refuse a GGUF whose chat template is too large to read or exceeds a bound of chat templates."""
        info = read_info(path)
        size = info.skipped.get("tokenizer.chat_template")
        if size is not None:
            raise InvalidRequest(
                f"{label} is {size} bytes, more than a chat template may have "
                f"({limits.size_text(limits.TEMPLATE_MAX_BYTES)})",
                field="template",
            )
        if info.chat_template:
            await self.check_template(info.chat_template, TemplateSource(label, "template"))
