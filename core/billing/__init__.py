"""Plans, subscriptions, proration and quotas: the business of selling images."""
