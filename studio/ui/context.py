"""What every tab shares: the workspace, the job queue, the model pool, and who is asking."""
from __future__ import annotations

from dataclasses import dataclass, field

import gradio as gr

from ..jobs import JobQueue
from ..workspace import Workspace


@dataclass
class Studio:
    workspace: Workspace
    queue: JobQueue
    admins: set[str] = field(default_factory=set)
    max_upload_mb: int = 200
    _pool: object = None

    @property
    def pool(self):
        """The chat model pool, created on first use so the app starts fast."""
        if self._pool is None:
            from ..inference import ModelPool

            self._pool = ModelPool()
        return self._pool

    def user(self, request: gr.Request | None) -> str:
        return (getattr(request, "username", None) or "local") if request is not None else "local"

    def is_admin(self, request: gr.Request | None) -> bool:
        # Without logins everyone is the one local user, who owns the whole studio.
        user = self.user(request)
        return user == "local" or user in self.admins
