"""The comparison server of `cargo xtask bench --only fastapi`: `GET /api/{user_id}/tasks` of
the HTTP contract (the default listing: newest first, `limit` 1-100, `meta.total`,
`meta.next_cursor`), written as a FastAPI + SQLModel app is usually written (a synchronous
endpoint, a session per request, the ORM's select, pydantic response models), reading the
benchmark's PostgreSQL database as `serve` left it.

Environment: `DATABASE_URL` (a `postgresql://` URL) and `TODO_JWT_SECRET` (HS256, as `serve`).
"""

import base64
import json
import os
import uuid
from datetime import datetime, timezone
from typing import Any, Optional

import jwt
from fastapi import Depends, FastAPI, Header, HTTPException, Query
from pydantic import BaseModel
from sqlalchemy import Column, Text
from sqlmodel import Field, Session, SQLModel, create_engine, func, select

SECRET = os.environ["TODO_JWT_SECRET"]
URL = os.environ["DATABASE_URL"].replace("postgres://", "postgresql+psycopg2://", 1)
# The same pool size as `serve`'s default on PostgreSQL, per worker process.
engine = create_engine(URL, pool_size=16, max_overflow=0)
PRIORITIES = ("low", "medium", "high")


class Task(SQLModel, table=True):
    __tablename__ = "tasks"
    id: uuid.UUID = Field(primary_key=True)
    user_id: str
    title: str
    description: Optional[str] = None
    completed: bool
    completed_at: Optional[datetime] = None
    priority: int
    tags: str = Field(sa_column=Column(Text))
    due_at: Optional[datetime] = None
    created_at: datetime
    updated_at: datetime
    version: int
    list_id: uuid.UUID
    parent_id: Optional[uuid.UUID] = None
    position: str
    recurrence_rule: Optional[str] = None
    recurrence_timezone: Optional[str] = None
    last_completed_at: Optional[datetime] = None
    reminders: str = Field(sa_column=Column(Text))


class Recurrence(BaseModel):
    rule: str
    timezone: str


class TaskOut(BaseModel):
    id: uuid.UUID
    user_id: str
    title: str
    description: Optional[str]
    completed: bool
    completed_at: Optional[str]
    priority: str
    tags: list[str]
    due_at: Optional[str]
    created_at: str
    updated_at: str
    version: int
    list_id: uuid.UUID
    parent_id: Optional[uuid.UUID]
    position: str
    recurrence: Optional[Recurrence]
    last_completed_at: Optional[str]
    reminders: list[dict[str, Any]]


class Meta(BaseModel):
    limit: int
    next_cursor: Optional[str]
    total: int


class TaskList(BaseModel):
    data: list[TaskOut]
    meta: Meta


def ts(v: Optional[datetime]) -> Optional[str]:
    """RFC 3339 in UTC with milliseconds, as the contract writes timestamps."""
    if v is None:
        return None
    return v.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def out(t: Task) -> TaskOut:
    return TaskOut(
        id=t.id,
        user_id=t.user_id,
        title=t.title,
        description=t.description,
        completed=t.completed,
        completed_at=ts(t.completed_at),
        priority=PRIORITIES[t.priority],
        tags=json.loads(t.tags),
        due_at=ts(t.due_at),
        created_at=ts(t.created_at),
        updated_at=ts(t.updated_at),
        version=t.version,
        list_id=t.list_id,
        parent_id=t.parent_id,
        position=t.position,
        recurrence=Recurrence(rule=t.recurrence_rule, timezone=t.recurrence_timezone)
        if t.recurrence_rule
        else None,
        last_completed_at=ts(t.last_completed_at),
        reminders=json.loads(t.reminders),
    )


def get_session():
    with Session(engine) as session:
        yield session


def subject(authorization: Optional[str] = Header(default=None)) -> str:
    if not authorization or not authorization.startswith("Bearer "):
        raise HTTPException(401, "missing bearer token", {"WWW-Authenticate": "Bearer"})
    try:
        claims = jwt.decode(
            authorization[7:], SECRET, algorithms=["HS256"], options={"require": ["exp"]}
        )
    except jwt.PyJWTError:
        raise HTTPException(401, "invalid token", {"WWW-Authenticate": "Bearer"})
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise HTTPException(401, "token without a subject", {"WWW-Authenticate": "Bearer"})
    return sub


app = FastAPI()


@app.get("/healthz")
def healthz():
    return {"status": "ok"}


@app.get("/api/{user_id}/tasks", response_model=TaskList)
def list_tasks(
    user_id: str,
    limit: int = Query(default=50, ge=1, le=100),
    cursor: Optional[str] = None,
    sub: str = Depends(subject),
    session: Session = Depends(get_session),
):
    if sub != user_id:
        raise HTTPException(403, "forbidden")
    mine = Task.user_id == user_id
    query = select(Task).where(mine)
    if cursor is not None:
        try:
            at, last = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
            at, last = datetime.fromisoformat(at), uuid.UUID(last)
        except ValueError:
            raise HTTPException(400, "bad cursor")
        query = query.where((Task.created_at < at) | ((Task.created_at == at) & (Task.id < last)))
    rows = session.exec(
        query.order_by(Task.created_at.desc(), Task.id.desc()).limit(limit + 1)
    ).all()
    total = session.exec(select(func.count()).select_from(Task).where(mine)).one()
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        next_cursor = base64.urlsafe_b64encode(
            f"{last.created_at.isoformat()}|{last.id}".encode()
        ).decode()
    return TaskList(
        data=[out(t) for t in rows],
        meta=Meta(limit=limit, next_cursor=next_cursor, total=total),
    )
