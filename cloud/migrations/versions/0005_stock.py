"""stock: product details, purchase orders and receipts, lots, the movement book, stock takes, routes;
suppliers get email, phone, address and lead time

Revision ID: 0005
Revises: 0004
"""

from alembic import op
import sqlalchemy as sa

from cloud.core.db import UTCDateTime


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('suppliers', sa.Column('email', sa.String(length=200), server_default='', nullable=False))
    op.add_column('suppliers', sa.Column('phone', sa.String(length=40), server_default='', nullable=False))
    op.add_column('suppliers', sa.Column('address', sa.String(length=300), server_default='', nullable=False))
    op.add_column('suppliers', sa.Column('lead_time_days', sa.Integer(), nullable=True))
    op.create_table('product_details',
    sa.Column('product_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('barcode', sa.String(length=13), nullable=True),
    sa.Column('cost', sa.BigInteger(), nullable=False),
    sa.Column('price', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('shelf_life_days', sa.Integer(), nullable=True),
    sa.Column('reorder_level', sa.Integer(), server_default='0', nullable=False),
    sa.Column('updated_at', UTCDateTime(), nullable=False),
    sa.CheckConstraint('cost >= 0', name='product_cost_not_negative'),
    sa.CheckConstraint('price >= 0', name='product_price_not_negative'),
    sa.CheckConstraint('reorder_level >= 0', name='product_reorder_level_not_negative'),
    sa.CheckConstraint('shelf_life_days > 0', name='product_shelf_life_positive'),
    sa.ForeignKeyConstraint(['product_id'], ['products.id'], ),
    sa.PrimaryKeyConstraint('product_id'),
    sa.UniqueConstraint('barcode')
    )
    op.create_table('purchase_orders',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('supplier_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('expected_on', sa.Date(), nullable=True),
    sa.Column('note', sa.String(length=500), server_default='', nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('created_by', sa.Integer(), nullable=True),
    sa.Column('sent_at', UTCDateTime(), nullable=True),
    sa.Column('confirmed_at', UTCDateTime(), nullable=True),
    sa.Column('confirmed_by', sa.Integer(), nullable=True),
    sa.Column('closed_at', UTCDateTime(), nullable=True),
    sa.Column('cancel_reason', sa.String(length=200), server_default='', nullable=False),
    sa.ForeignKeyConstraint(['confirmed_by'], ['staff.id'], ),
    sa.ForeignKeyConstraint(['created_by'], ['staff.id'], ),
    sa.ForeignKeyConstraint(['supplier_id'], ['suppliers.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_purchase_orders_supplier_id'), 'purchase_orders', ['supplier_id'], unique=False)
    op.create_table('purchase_order_lines',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('po_id', sa.Integer(), nullable=False),
    sa.Column('product_id', sa.Integer(), nullable=False),
    sa.Column('quantity', sa.Integer(), nullable=False),
    sa.Column('unit_cost', sa.BigInteger(), nullable=False),
    sa.CheckConstraint('quantity > 0', name='po_line_quantity_positive'),
    sa.CheckConstraint('unit_cost >= 0', name='po_line_unit_cost_not_negative'),
    sa.ForeignKeyConstraint(['po_id'], ['purchase_orders.id'], ),
    sa.ForeignKeyConstraint(['product_id'], ['products.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('po_id', 'product_id', name='one_line_per_product')
    )
    op.create_table('receipts',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('key', sa.String(length=120), nullable=False),
    sa.Column('po_id', sa.Integer(), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('received_at', UTCDateTime(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('note', sa.String(length=500), server_default='', nullable=False),
    sa.ForeignKeyConstraint(['po_id'], ['purchase_orders.id'], ),
    sa.ForeignKeyConstraint(['user_id'], ['staff.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('key')
    )
    op.create_index(op.f('ix_receipts_po_id'), 'receipts', ['po_id'], unique=False)
    op.create_table('lots',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('product_id', sa.Integer(), nullable=False),
    sa.Column('receipt_id', sa.Integer(), nullable=True),
    sa.Column('po_line_id', sa.Integer(), nullable=True),
    sa.Column('quantity', sa.Integer(), nullable=False),
    sa.Column('unit_cost', sa.BigInteger(), nullable=False),
    sa.Column('expires_on', sa.Date(), nullable=True),
    sa.Column('received_at', UTCDateTime(), nullable=False),
    sa.CheckConstraint('quantity > 0', name='lot_quantity_positive'),
    sa.CheckConstraint('unit_cost >= 0', name='lot_unit_cost_not_negative'),
    sa.ForeignKeyConstraint(['po_line_id'], ['purchase_order_lines.id'], ),
    sa.ForeignKeyConstraint(['product_id'], ['products.id'], ),
    sa.ForeignKeyConstraint(['receipt_id'], ['receipts.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_lots_po_line_id'), 'lots', ['po_line_id'], unique=False)
    op.create_index(op.f('ix_lots_product_id'), 'lots', ['product_id'], unique=False)
    op.create_table('stock_ops',
    sa.Column('key', sa.String(length=120), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )
    op.create_table('stock_movements',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('at', UTCDateTime(), nullable=False),
    sa.Column('op', sa.String(length=120), nullable=False),
    sa.Column('kind', sa.String(length=12), nullable=False),
    sa.Column('product_id', sa.Integer(), nullable=False),
    sa.Column('lot_id', sa.Integer(), nullable=True),
    sa.Column('machine_id', sa.String(length=32), nullable=True),
    sa.Column('slot', sa.String(length=3), nullable=True),
    sa.Column('quantity', sa.Integer(), nullable=False),
    sa.Column('value', sa.BigInteger(), nullable=False),
    sa.Column('reason', sa.String(length=200), server_default='', nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.CheckConstraint('quantity <> 0', name='movement_moves_something'),
    sa.ForeignKeyConstraint(['lot_id'], ['lots.id'], ),
    sa.ForeignKeyConstraint(['machine_id'], ['machines.id'], ),
    sa.ForeignKeyConstraint(['op'], ['stock_ops.key'], ),
    sa.ForeignKeyConstraint(['product_id'], ['products.id'], ),
    sa.ForeignKeyConstraint(['user_id'], ['staff.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_stock_movements_lot_id'), 'stock_movements', ['lot_id'], unique=False)
    op.create_index(op.f('ix_stock_movements_op'), 'stock_movements', ['op'], unique=False)
    op.create_index('movements_by_place', 'stock_movements', ['product_id', 'machine_id', 'slot'], unique=False)
    op.create_index('movements_by_slot', 'stock_movements', ['machine_id', 'slot'], unique=False)
    op.create_table('stock_takes',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('key', sa.String(length=100), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('at', UTCDateTime(), nullable=False),
    sa.Column('reason', sa.String(length=200), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['staff.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('key')
    )
    op.create_table('stock_take_lines',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('take_id', sa.Integer(), nullable=False),
    sa.Column('product_id', sa.Integer(), nullable=False),
    sa.Column('lot_id', sa.Integer(), nullable=True),
    sa.Column('book', sa.Integer(), nullable=False),
    sa.Column('counted', sa.Integer(), nullable=False),
    sa.Column('variance', sa.Integer(), nullable=False),
    sa.Column('value', sa.BigInteger(), nullable=False),
    sa.CheckConstraint('counted >= 0', name='take_counted_not_negative'),
    sa.ForeignKeyConstraint(['lot_id'], ['lots.id'], ),
    sa.ForeignKeyConstraint(['product_id'], ['products.id'], ),
    sa.ForeignKeyConstraint(['take_id'], ['stock_takes.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_stock_take_lines_take_id'), 'stock_take_lines', ['take_id'], unique=False)
    op.create_table('routes',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=80), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('route_stops',
    sa.Column('route_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('machine_id', sa.String(length=32), nullable=False),
    sa.ForeignKeyConstraint(['machine_id'], ['machines.id'], ),
    sa.ForeignKeyConstraint(['route_id'], ['routes.id'], ),
    sa.PrimaryKeyConstraint('route_id', 'position'),
    sa.UniqueConstraint('route_id', 'machine_id', name='a_machine_once_per_route')
    )


def downgrade() -> None:
    op.drop_table('route_stops')
    op.drop_table('routes')
    op.drop_index(op.f('ix_stock_take_lines_take_id'), table_name='stock_take_lines')
    op.drop_table('stock_take_lines')
    op.drop_table('stock_takes')
    op.drop_index('movements_by_slot', table_name='stock_movements')
    op.drop_index('movements_by_place', table_name='stock_movements')
    op.drop_index(op.f('ix_stock_movements_op'), table_name='stock_movements')
    op.drop_index(op.f('ix_stock_movements_lot_id'), table_name='stock_movements')
    op.drop_table('stock_movements')
    op.drop_table('stock_ops')
    op.drop_index(op.f('ix_lots_product_id'), table_name='lots')
    op.drop_index(op.f('ix_lots_po_line_id'), table_name='lots')
    op.drop_table('lots')
    op.drop_index(op.f('ix_receipts_po_id'), table_name='receipts')
    op.drop_table('receipts')
    op.drop_table('purchase_order_lines')
    op.drop_index(op.f('ix_purchase_orders_supplier_id'), table_name='purchase_orders')
    op.drop_table('purchase_orders')
    op.drop_table('product_details')
    with op.batch_alter_table('suppliers') as batch:
        batch.drop_column('lead_time_days')
        batch.drop_column('address')
        batch.drop_column('phone')
        batch.drop_column('email')
