"""Lookups Django lacks, registered on every field when the marketplace app is ready."""

from django.core.exceptions import EmptyResultSet
from django.db.models import Field, Lookup


@Field.register_lookup
class AnyOf(Lookup):
    """`field__any_of=[…]`: membership in a list that PostgreSQL receives as one array parameter (`= ANY(%s)`), so
    the SQL text is the same for any number of values. Django's `__in` writes one placeholder per value, and for a
    few hundred values merging them into the SQL costs more than the lookup itself. `IN (…)` on other databases."""

    lookup_name = "any_of"
    prepare_rhs = False

    def as_sql(self, compiler, connection):
        lhs, lhs_params = self.process_lhs(compiler, connection)
        field = self.lhs.output_field
        values = [field.get_db_prep_value(field.get_prep_value(value), connection, prepared=True) for value in self.rhs]
        if not values:
            raise EmptyResultSet
        if connection.vendor == "postgresql":
            return f"{lhs} = ANY(%s)", [*lhs_params, values]
        return f"{lhs} IN ({', '.join(['%s'] * len(values))})", [*lhs_params, *values]
