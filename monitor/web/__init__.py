"""``monitor serve``: the web app supervisors, quality staff and agents share."""
