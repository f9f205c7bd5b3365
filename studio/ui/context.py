"""What every tab shares: the workspace, the job queue, the model pool, and who is asking."""
from __future__ import annotations

from dataclasses import dataclass, field

import gradio as gr

from ..jobs import JobQueue
from ..runs import LOCAL_USER
from ..workspace import Workspace


def _new_pool():
    from ..inference import ModelPool

    return ModelPool()


@dataclass
class Studio:
    workspace: Workspace
    queue: JobQueue
    admins: set[str] = field(default_factory=set)
    logins: bool = False  # whether people log in; without logins the one local user owns the whole studio
    max_upload_mb: int = 200
    # Made with the Studio, so two first chats cannot each make one; it loads no model until someone chats.
    pool: object = field(default_factory=_new_pool)

    def user(self, request: gr.Request | None) -> str:
        return getattr(request, "username", None) or LOCAL_USER

    def is_admin(self, request: gr.Request | None) -> bool:
        """With logins, those named by --admin; without, whoever uses it (never decided by a name)."""
        return not self.logins or self.user(request) in self.admins
