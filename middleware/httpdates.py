"""HTTP-date (RFC 9110 §5.6.7): strict parsing of its three formats, formatting as IMF-fixdate. The one place
the package reads or writes a date, as a datetime or as seconds since the epoch (the cache's arithmetic).

`email.utils.parsedate_to_datetime` is not used for parsing: it accepts what is not an HTTP-date (numeric
zones, a missing zone, the first of two comma-joined dates) and returns naive datetimes for asctime, while
If-Modified-Since and If-Unmodified-Since must be ignored unless they hold exactly one valid HTTP-date
(§13.1.3, §13.1.4).
"""

import re
from datetime import UTC, datetime
from email.utils import format_datetime

__all__ = ["format_http_date", "format_http_timestamp", "http_date_seconds", "parse_http_date"]

_MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTHS = {name: number for number, name in enumerate(_MONTH_NAMES, 1)}
_DAY = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_LONG_DAY = r"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)"
_MONTH = rf"(?P<month>{'|'.join(_MONTH_NAMES)})"
_TIME = r"(?P<hour>\d\d):(?P<minute>\d\d):(?P<second>\d\d)"
# Grammar names, case and spacing are exactly §5.6.7's; the day name is not checked against the date.
_IMF_FIXDATE = re.compile(rf"{_DAY}, (?P<day>\d\d) {_MONTH} (?P<year>\d{{4}}) {_TIME} GMT", re.ASCII)
_RFC850_DATE = re.compile(rf"{_LONG_DAY}, (?P<day>\d\d)-{_MONTH}-(?P<year>\d\d) {_TIME} GMT", re.ASCII)
_ASCTIME_DATE = re.compile(rf"{_DAY} {_MONTH} (?P<day>[ \d]\d) {_TIME} (?P<year>\d{{4}})", re.ASCII)


def parse_http_date(value: str) -> datetime | None:
    """An aware UTC datetime, or None for anything that is not exactly one HTTP-date (never raises)."""
    value = value.strip(" \t")
    match = _IMF_FIXDATE.fullmatch(value) or _RFC850_DATE.fullmatch(value) or _ASCTIME_DATE.fullmatch(value)
    if match is None:
        return None
    year = int(match["year"])
    try:
        return datetime(
            year if len(match["year"]) == 4 else _rfc850_year(year),
            _MONTHS[match["month"]],
            int(match["day"]),
            int(match["hour"]),
            int(match["minute"]),
            min(int(match["second"]), 59),  # second 60 is a leap second (§5.6.7); datetime has none
            tzinfo=UTC,
        )
    except ValueError:  # 31 Feb, hour 25 and the like
        return None


def _rfc850_year(two_digits: int) -> int:
    """A two-digit year more than 50 years ahead is the most recent past year with those digits (§5.6.7)."""
    this_year = datetime.now(UTC).year
    year = this_year - this_year % 100 + two_digits
    return year - 100 if year > this_year + 50 else year


def format_http_date(moment: datetime) -> str:
    """IMF-fixdate, the only format a sender may generate (§5.6.7); sub-second precision is dropped."""
    if moment.tzinfo is None:
        raise ValueError("an HTTP-date needs an aware datetime; a naive one has no defined instant")
    return format_datetime(moment.astimezone(UTC).replace(microsecond=0), usegmt=True)


def http_date_seconds(value: str) -> float | None:
    """Seconds since the epoch of an HTTP-date, or None for anything `parse_http_date` refuses."""
    moment = parse_http_date(value)
    return None if moment is None else moment.timestamp()


def format_http_timestamp(seconds: float) -> str:
    """IMF-fixdate of seconds since the epoch."""
    return format_http_date(datetime.fromtimestamp(seconds, UTC))
