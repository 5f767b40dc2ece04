"""web console: users, API tokens, login events, acknowledgement by user, console column

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('users',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('password_hash', sa.String(length=256), nullable=False),
    sa.Column('disabled', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('password_changed_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('api_tokens',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('token_sha256', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('token_sha256')
    )
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_api_tokens_user_id'), ['user_id'], unique=False)
    op.create_table('login_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('success', sa.Boolean(), nullable=False),
    sa.Column('peer_address', sa.String(length=128), nullable=True),
    sa.Column('detail', sa.String(length=128), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('login_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_login_events_at'), ['at'], unique=False)
        batch_op.create_index(batch_op.f('ix_login_events_name'), ['name'], unique=False)
    with op.batch_alter_table('acknowledgements', schema=None) as batch_op:
        batch_op.add_column(sa.Column('user_id', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_acknowledgements_user_id'), ['user_id'], unique=False)
        batch_op.create_foreign_key('fk_acknowledgements_user_id_users', 'users', ['user_id'], ['id'])
    with op.batch_alter_table('decision_records', schema=None) as batch_op:
        batch_op.add_column(sa.Column('console', sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f('ix_decision_records_console'), ['console'], unique=False)

    # the console of the records written before: the offset's console text, else the calling AE
    conn = op.get_bind()
    rows = conn.execute(sa.text(
        "SELECT d.id, d.record_json, o.calling_ae_title FROM decision_records d "
        "JOIN received_objects o ON o.id = d.object_id")).fetchall()
    update = sa.text("UPDATE decision_records SET console = :console WHERE id = :id")
    batch = []
    for ident, record_json, calling in rows:
        try:
            console = ((json.loads(record_json).get("offset") or {}).get("console"))
        except ValueError:
            console = None
        console = (console or calling or None)
        if console is not None:
            batch.append({"id": ident, "console": str(console)[:64]})
    if batch:
        conn.execute(update, batch)


def downgrade() -> None:
    with op.batch_alter_table('decision_records', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_decision_records_console'))
        batch_op.drop_column('console')
    with op.batch_alter_table('acknowledgements', schema=None) as batch_op:
        batch_op.drop_constraint('fk_acknowledgements_user_id_users', type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_acknowledgements_user_id'))
        batch_op.drop_column('user_id')
    with op.batch_alter_table('login_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_login_events_name'))
        batch_op.drop_index(batch_op.f('ix_login_events_at'))
    op.drop_table('login_events')
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_tokens_user_id'))
    op.drop_table('api_tokens')
    op.drop_table('users')
