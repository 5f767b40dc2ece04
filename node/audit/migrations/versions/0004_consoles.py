"""consoles: consoles, their history as added records, each decision's console check

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

docs/contract.md section 6: a console (the calling AE title with the SRO's Station Name,
Manufacturer and Manufacturer's Model Name), its established convention and how (commissioned
by a person with a note, or learned) as added records, and the ``console_convention`` check of
each decision, recorded in the decision's transaction.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('consoles',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=300), nullable=False),
    sa.Column('calling_ae_title', sa.String(length=64), nullable=True),
    sa.Column('station_name', sa.String(length=64), nullable=True),
    sa.Column('manufacturer', sa.String(length=64), nullable=True),
    sa.Column('manufacturer_model_name', sa.String(length=64), nullable=True),
    sa.Column('first_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('state_json', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('key')
    )
    op.create_table('console_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('console_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('pairs', sa.String(length=160), nullable=True),
    sa.Column('how', sa.String(length=16), nullable=True),
    sa.Column('by', sa.String(length=128), nullable=True),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sop_instance_uid', sa.String(length=64), nullable=True),
    sa.ForeignKeyConstraint(['console_id'], ['consoles.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('console_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_console_events_console_id'), ['console_id'],
                              unique=False)
    op.create_table('console_checks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('console_id', sa.Integer(), nullable=False),
    sa.Column('decision_id', sa.Integer(), nullable=False),
    sa.Column('result', sa.String(length=16), nullable=False),
    sa.Column('sentence', sa.Text(), nullable=False),
    sa.Column('checked_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['console_id'], ['consoles.id'], ),
    sa.ForeignKeyConstraint(['decision_id'], ['decision_records.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('decision_id')
    )
    with op.batch_alter_table('console_checks', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_console_checks_console_id'), ['console_id'],
                              unique=False)
        batch_op.create_index(batch_op.f('ix_console_checks_result'), ['result'], unique=False)
        batch_op.create_index(batch_op.f('ix_console_checks_checked_at'), ['checked_at'],
                              unique=False)


def downgrade() -> None:
    op.drop_table('console_checks')
    op.drop_table('console_events')
    op.drop_table('consoles')
