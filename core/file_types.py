"""File types: how an attachment is read, told by MIME type and by extension (platforms
often send `application/octet-stream`, or `text/plain` for source code)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from core.types import Modality

__all__ = ["UNSUPPORTED_HINTS", "FileType", "Kind", "classify", "extension"]

Kind = Literal["pdf", "docx", "text", "media"]

_MEDIA_BY_EXTENSION: dict[str, str] = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
    "heic": "image/heic",
    "heif": "image/heif",
    "mp3": "audio/mpeg",
    "wav": "audio/wav",
    "ogg": "audio/ogg",
    "oga": "audio/ogg",
    "m4a": "audio/mp4",
    "flac": "audio/flac",
    "aac": "audio/aac",
    "mp4": "video/mp4",
    "mov": "video/quicktime",
    "webm": "video/webm",
    "mpeg": "video/mpeg",
}

# extension → (label for the model, code-fence language or "" for prose shown as is)
_TEXT_BY_EXTENSION: dict[str, tuple[str, str | None]] = {
    "txt": ("text", None),
    "text": ("text", None),
    "log": ("log", "text"),
    "md": ("Markdown", None),
    "markdown": ("Markdown", None),
    "rst": ("reStructuredText", None),
    "csv": ("CSV", "csv"),
    "tsv": ("TSV", "tsv"),
    "json": ("JSON", "json"),
    "jsonl": ("JSON lines", "json"),
    "ndjson": ("JSON lines", "json"),
    "yaml": ("YAML", "yaml"),
    "yml": ("YAML", "yaml"),
    "toml": ("TOML", "toml"),
    "ini": ("INI", "ini"),
    "cfg": ("config", "ini"),
    "conf": ("config", "text"),
    "env": ("environment file", "bash"),
    "xml": ("XML", "xml"),
    "html": ("HTML", "html"),
    "htm": ("HTML", "html"),
    "css": ("CSS", "css"),
    "scss": ("SCSS", "scss"),
    "sql": ("SQL", "sql"),
    "py": ("Python source", "python"),
    "pyi": ("Python source", "python"),
    "ipynb": ("Jupyter notebook", "json"),
    "js": ("JavaScript source", "javascript"),
    "mjs": ("JavaScript source", "javascript"),
    "cjs": ("JavaScript source", "javascript"),
    "jsx": ("JavaScript source", "jsx"),
    "ts": ("TypeScript source", "typescript"),
    "tsx": ("TypeScript source", "tsx"),
    "java": ("Java source", "java"),
    "kt": ("Kotlin source", "kotlin"),
    "kts": ("Kotlin source", "kotlin"),
    "scala": ("Scala source", "scala"),
    "go": ("Go source", "go"),
    "rs": ("Rust source", "rust"),
    "c": ("C source", "c"),
    "h": ("C header", "c"),
    "cc": ("C++ source", "cpp"),
    "cpp": ("C++ source", "cpp"),
    "hpp": ("C++ header", "cpp"),
    "cs": ("C# source", "csharp"),
    "swift": ("Swift source", "swift"),
    "rb": ("Ruby source", "ruby"),
    "php": ("PHP source", "php"),
    "pl": ("Perl source", "perl"),
    "lua": ("Lua source", "lua"),
    "r": ("R source", "r"),
    "dart": ("Dart source", "dart"),
    "vue": ("Vue component", "vue"),
    "svelte": ("Svelte component", "svelte"),
    "sh": ("shell script", "bash"),
    "bash": ("shell script", "bash"),
    "zsh": ("shell script", "bash"),
    "ps1": ("PowerShell script", "powershell"),
    "tf": ("Terraform", "hcl"),
    "proto": ("Protocol Buffers", "protobuf"),
    "graphql": ("GraphQL", "graphql"),
    "diff": ("diff", "diff"),
    "patch": ("diff", "diff"),
}
_TEXT_BY_FILENAME: dict[str, tuple[str, str | None]] = {
    "dockerfile": ("Dockerfile", "dockerfile"),
    "makefile": ("Makefile", "makefile"),
    "readme": ("text", None),
    "license": ("text", None),
}
_TEXT_BY_MIME: dict[str, tuple[str, str | None]] = {
    "text/markdown": ("Markdown", None),
    "text/x-markdown": ("Markdown", None),
    "text/csv": ("CSV", "csv"),
    "text/tab-separated-values": ("TSV", "tsv"),
    "application/json": ("JSON", "json"),
    "application/x-ndjson": ("JSON lines", "json"),
    "application/xml": ("XML", "xml"),
    "text/xml": ("XML", "xml"),
    "application/x-yaml": ("YAML", "yaml"),
    "application/yaml": ("YAML", "yaml"),
    "text/yaml": ("YAML", "yaml"),
    "application/toml": ("TOML", "toml"),
    "text/html": ("HTML", "html"),
    "text/css": ("CSS", "css"),
    "application/javascript": ("JavaScript source", "javascript"),
    "text/javascript": ("JavaScript source", "javascript"),
    "application/x-python": ("Python source", "python"),
    "text/x-python": ("Python source", "python"),
    "application/x-sh": ("shell script", "bash"),
    "application/sql": ("SQL", "sql"),
}
_DOCX_MIME = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
UNSUPPORTED_HINTS: dict[str, str] = {
    "doc": "old Word .doc files; save it as .docx or PDF",
    "xls": "Excel files; export the sheet as CSV",
    "xlsx": "Excel files; export the sheet as CSV",
    "ppt": "PowerPoint files; export the slides as PDF",
    "pptx": "PowerPoint files; export the slides as PDF",
    "zip": "archives; attach the files inside",
}


@dataclass(frozen=True, slots=True)
class FileType:
    """How a file is read. `label` names it for the model; `fence` is the code-fence language
    for text shown verbatim (None: prose, shown as is)."""

    kind: Kind
    mime: str
    label: str
    fence: str | None = None
    modality: Modality | None = None


def extension(name: str) -> str:
    base = name.rsplit("/", 1)[-1].lower()
    return base.rsplit(".", 1)[-1] if "." in base.strip(".") else ""


def classify(name: str, mime: str) -> FileType | None:
    """The way to read a file named `name` sent as `mime`, or None if nothing reads it.
    A specific MIME type wins; a generic one (`application/octet-stream`, empty,
    `text/plain` for code) defers to the extension."""
    mime = (mime or "").split(";", 1)[0].strip().lower()
    ext = extension(name)
    base = name.rsplit("/", 1)[-1].lower()
    if mime == "application/pdf" or ext == "pdf":
        return FileType("pdf", "application/pdf", "PDF")
    if mime == _DOCX_MIME or ext == "docx":
        return FileType("docx", _DOCX_MIME, "Word document")
    top = mime.split("/", 1)[0]
    if top in ("image", "audio", "video") and "/" in mime:
        return FileType("media", mime, top, modality=top)  # type: ignore[arg-type]
    if ext in _MEDIA_BY_EXTENSION and (not mime or mime == "application/octet-stream"):
        resolved = _MEDIA_BY_EXTENSION[ext]
        top = resolved.split("/", 1)[0]
        return FileType("media", resolved, top, modality=top)  # type: ignore[arg-type]
    by_name = _TEXT_BY_EXTENSION.get(ext) or _TEXT_BY_FILENAME.get(base)
    if mime in _TEXT_BY_MIME and (by_name is None or by_name[0] in ("text", "log")):
        label, fence = _TEXT_BY_MIME[mime]
        return FileType("text", mime, label, fence)
    if by_name is not None:
        return FileType("text", mime or "text/plain", by_name[0], by_name[1])
    if mime in _TEXT_BY_MIME:
        label, fence = _TEXT_BY_MIME[mime]
        return FileType("text", mime, label, fence)
    if top == "text":
        return FileType("text", mime, "text")
    return None
