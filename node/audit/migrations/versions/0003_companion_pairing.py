"""companion pairing: pairing columns of received objects, decision history, pairing links

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

What pairing an Elekta XVI RPS companion object with its SRO needs (docs/contract.md section 1,
offset sources item 3): each object's Patient ID, Study Instance UID, registration (or alignment)
time, role and pairing state; more than one decision per object (a paired SRO gets a new one,
the earlier one is kept, marked superseded); and the links between companions and SROs.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

_NAMING = {"uq": "uq_%(table_name)s_%(column_0_name)s"}


def upgrade() -> None:
    with op.batch_alter_table('received_objects', schema=None) as batch_op:
        batch_op.add_column(sa.Column('patient_id', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('study_instance_uid', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('registration_time', sa.DateTime(timezone=False),
                                      nullable=True))
        batch_op.add_column(sa.Column('pairing_role', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('pairing_state', sa.String(length=16), nullable=True))
        batch_op.create_index('ix_received_objects_pairing', ['patient_id', 'study_instance_uid'],
                              unique=False)
    # SQLite cannot drop a constraint in place: batch mode copies the table; the unique
    # constraint of 0001 on object_id is unnamed there, so it is named by the convention to be
    # dropped (Alembic's documented way for unnamed SQLite constraints)
    with op.batch_alter_table('decision_records', schema=None, recreate='auto',
                              naming_convention=_NAMING) as batch_op:
        if op.get_bind().dialect.name == 'sqlite':
            batch_op.drop_constraint('uq_decision_records_object_id', type_='unique')
        else:
            batch_op.drop_constraint('decision_records_object_id_key', type_='unique')
        batch_op.add_column(sa.Column('superseded_by_id', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_decision_records_superseded_by_id'),
                              ['superseded_by_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_decision_records_object_id'), ['object_id'],
                              unique=False)
        batch_op.create_foreign_key('fk_decision_records_superseded_by_id', 'decision_records',
                                    ['superseded_by_id'], ['id'])
    op.create_table('companion_pairings',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('sro_object_id', sa.Integer(), nullable=False),
    sa.Column('companion_object_id', sa.Integer(), nullable=False),
    sa.Column('sro_decision_id', sa.Integer(), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('seconds', sa.Float(), nullable=True),
    sa.Column('paired_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['companion_object_id'], ['received_objects.id'], ),
    sa.ForeignKeyConstraint(['sro_decision_id'], ['decision_records.id'], ),
    sa.ForeignKeyConstraint(['sro_object_id'], ['received_objects.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('companion_pairings', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_companion_pairings_companion_object_id'),
                              ['companion_object_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_companion_pairings_sro_decision_id'),
                              ['sro_decision_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_companion_pairings_sro_object_id'),
                              ['sro_object_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('companion_pairings', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_companion_pairings_sro_object_id'))
        batch_op.drop_index(batch_op.f('ix_companion_pairings_sro_decision_id'))
        batch_op.drop_index(batch_op.f('ix_companion_pairings_companion_object_id'))
    op.drop_table('companion_pairings')
    # the history goes: only each object's current decision is kept (0001: one per object)
    op.execute("DELETE FROM acknowledgements WHERE decision_id IN "
               "(SELECT id FROM decision_records WHERE superseded_by_id IS NOT NULL)")
    op.execute("DELETE FROM alert_outbox WHERE decision_id IN "
               "(SELECT id FROM decision_records WHERE superseded_by_id IS NOT NULL)")
    op.execute("UPDATE decision_records SET superseded_by_id = NULL WHERE id IN "
               "(SELECT superseded_by_id FROM decision_records)")
    op.execute("DELETE FROM decision_records WHERE id NOT IN (SELECT MAX(id) FROM "
               "decision_records GROUP BY object_id)")
    with op.batch_alter_table('decision_records', schema=None) as batch_op:
        batch_op.drop_constraint('fk_decision_records_superseded_by_id', type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_decision_records_object_id'))
        batch_op.drop_index(batch_op.f('ix_decision_records_superseded_by_id'))
        batch_op.drop_column('superseded_by_id')
        batch_op.create_unique_constraint('uq_decision_records_object_id', ['object_id'])
    with op.batch_alter_table('received_objects', schema=None) as batch_op:
        batch_op.drop_index('ix_received_objects_pairing')
        batch_op.drop_column('pairing_state')
        batch_op.drop_column('pairing_role')
        batch_op.drop_column('registration_time')
        batch_op.drop_column('study_instance_uid')
        batch_op.drop_column('patient_id')
