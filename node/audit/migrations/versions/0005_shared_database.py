"""shared database: node identity, first copies decided by the database, conflicts, outbox claims

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

Several nodes on one database (issue 14 item 3): each object records the node that keeps it
(archive paths are unique per node); a unique partial index makes the database decide which
copy of a SOP Instance UID is the first; each object's data-set SHA-256 and a ``conflict`` flag
(a copy with other bytes); the alert outbox's claims (who, which sender, until when).

Rows recorded before this revision belong to node '' (one node used the database). Should a
database hold two first copies of one UID already (two nodes before this revision), the later
ones become duplicates of the earliest before the index is made.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

FIRST_COPY = "duplicate_of_id IS NULL AND placement = 'primary' AND sop_instance_uid IS NOT NULL"


#: names SQLite's unnamed unique constraint of 0001 when the table is copied (batch mode)
NAMING = {"uq": "uq_%(table_name)s_%(column_0_name)s"}


def upgrade() -> None:
    with op.batch_alter_table('received_objects', schema=None,
                              naming_convention=NAMING) as batch_op:
        batch_op.add_column(sa.Column('node', sa.String(length=128), nullable=False,
                                      server_default=''))
        batch_op.add_column(sa.Column('content_sha256', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('conflict', sa.Boolean(), nullable=False,
                                      server_default=sa.text('false')))
        batch_op.drop_constraint('received_objects_archive_path_key'
                                 if op.get_context().dialect.name == 'postgresql'
                                 else 'uq_received_objects_archive_path', type_='unique')
        batch_op.create_unique_constraint('uq_received_objects_node_archive_path',
                                          ['node', 'archive_path'])
    op.execute(
        "UPDATE received_objects SET duplicate_of_id = (SELECT min(p.id) FROM received_objects p"
        " WHERE p.sop_instance_uid = received_objects.sop_instance_uid AND p.placement ="
        " 'primary' AND p.duplicate_of_id IS NULL) WHERE placement = 'primary' AND"
        " duplicate_of_id IS NULL AND sop_instance_uid IS NOT NULL AND id > (SELECT min(p.id)"
        " FROM received_objects p WHERE p.sop_instance_uid = received_objects.sop_instance_uid"
        " AND p.placement = 'primary' AND p.duplicate_of_id IS NULL)")
    op.create_index('uq_received_objects_first_copy', 'received_objects', ['sop_instance_uid'],
                    unique=True, sqlite_where=sa.text(FIRST_COPY),
                    postgresql_where=sa.text(FIRST_COPY))
    with op.batch_alter_table('alert_outbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('claimed_by', sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column('claim_token', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('claimed_until', sa.DateTime(timezone=True),
                                      nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('alert_outbox', schema=None) as batch_op:
        batch_op.drop_column('claimed_until')
        batch_op.drop_column('claim_token')
        batch_op.drop_column('claimed_by')
    op.drop_index('uq_received_objects_first_copy', table_name='received_objects')
    with op.batch_alter_table('received_objects', schema=None) as batch_op:
        batch_op.drop_constraint('uq_received_objects_node_archive_path', type_='unique')
        batch_op.create_unique_constraint('received_objects_archive_path_key', ['archive_path'])
        batch_op.drop_column('conflict')
        batch_op.drop_column('content_sha256')
        batch_op.drop_column('node')
