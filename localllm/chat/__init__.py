"""Chat templates and what models write: rendering (sandboxed, in a pool of worker processes), template
capabilities, reasoning and tool-call parsing, tool declarations and grammars."""
