#!/usr/bin/env python3
"""Fills a Strata locator with a large synthetic index, for measuring C-FIND at scale.

  fill_locator.py (--db PATH | --url postgres://...) [--studies 50000] [--instances 1000000]
                  [--patients 20000]

--db is an SQLite locator, --url a PostgreSQL one (through psycopg, rows sent with COPY).
The database must already exist with Strata's schema (run `strata status --config ...` on a
config pointing at it first: that applies the migrations). Rows go through the same tables
the server writes; the instances have no files behind them (their location says so), so the
result is for queries only. The same --seed gives the same index.
"""

import argparse
import random
import sqlite3
import sys
import time

PATIENT_COLUMNS = ("id, patient_id, issuer_of_patient_id, patient_name, patient_birth_date, "
                   "patient_sex")
STUDY_COLUMNS = ("id, patient_fk, study_instance_uid, study_date, study_time, accession_number, "
                 "study_id, study_description, referring_physician_name")
SERIES_COLUMNS = ("id, study_fk, series_instance_uid, modality, series_number, series_description, "
                  "body_part_examined")
INSTANCE_COLUMNS = ("series_fk, sop_instance_uid, sop_class_uid, instance_number, "
                    "specific_character_set, transfer_syntax_uid, tier, location, byte_offset, "
                    "byte_length, crc32c, received_at, source_ae")


class Sqlite:
    """Rows through executemany into an SQLite locator."""

    def __init__(self, path):
        self.db = sqlite3.connect(path)
        if not self.db.execute("SELECT name FROM sqlite_master WHERE name = 'instances'").fetchone():
            sys.exit(f"{path} has no Strata schema: run `strata status --config ...` first")
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = NORMAL")

    def scalar(self, sql):
        return self.db.execute(sql).fetchone()[0]

    def insert(self, table, columns, rows):
        marks = ", ".join("?" * len(columns.split(",")))
        self.db.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)

    def finish(self):
        self.db.commit()
        self.db.execute("ANALYZE")


class Postgres:
    """Rows through COPY into a PostgreSQL locator; identity sequences moved past the ids
    given explicitly, so the server's own inserts do not collide with them."""

    def __init__(self, url):
        import psycopg
        self.db = psycopg.connect(url)
        if self.scalar("SELECT to_regclass('instances')") is None:
            sys.exit(f"{url} has no Strata schema: run `strata status --config ...` first")

    def scalar(self, sql):
        return self.db.execute(sql).fetchone()[0]

    def insert(self, table, columns, rows):
        with self.db.cursor().copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def finish(self):
        for table in ("patients", "studies", "series"):
            self.db.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                            f"(SELECT MAX(id) FROM {table}))")
        self.db.commit()
        self.db.autocommit = True
        self.db.execute("ANALYZE")

FAMILY = ["SMITH", "MARTIN", "MÜLLER", "GARCÍA", "DUBOIS", "ROSSI", "NOVAK", "KOWALSKI", "IVANOV",
          "MORENO", "MEYER", "LEROY", "BERG", "HANSEN", "JANSEN", "MAES", "WANG", "LI", "ZHANG",
          "CHEN", "TANAKA", "SATO", "KIM", "PARK", "NGUYEN", "SILVA", "COSTA", "MURPHY", "KELLY",
          "BROWN", "MOORE", "WALSH", "OLSEN", "HORVAT", "PAPADOPOULOS", "YILMAZ", "COHEN"]
GIVEN = ["ANNA", "JOHN", "MARIE", "PAUL", "LENA", "OMAR", "SARA", "IVAN", "MEI", "HUGO", "NORA",
         "LUCA", "EMMA", "YUKI", "ALI", "ZOE", "MAX", "IDA", "LEO", "EVA"]
MODALITIES = [("CT", "1.2.840.10008.5.1.4.1.1.2"), ("MR", "1.2.840.10008.5.1.4.1.1.4"),
              ("CR", "1.2.840.10008.5.1.4.1.1.1"), ("DX", "1.2.840.10008.5.1.4.1.1.1.1"),
              ("US", "1.2.840.10008.5.1.4.1.1.6.1")]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--db", help="an SQLite locator file")
    target.add_argument("--url", help="a PostgreSQL locator: postgres://...")
    p.add_argument("--studies", type=int, default=50_000)
    p.add_argument("--instances", type=int, default=1_000_000)
    p.add_argument("--patients", type=int, default=20_000)
    p.add_argument("--seed", type=int, default=11)
    args = p.parse_args()

    rng = random.Random(args.seed)
    db = Sqlite(args.db) if args.db else Postgres(args.url)
    started = time.time()
    base = db.scalar("SELECT COALESCE(MAX(id), 0) FROM patients")
    root = f"2.25.{rng.getrandbits(64)}"

    patients = []
    for n in range(args.patients):
        name = f"{rng.choice(FAMILY)}^{rng.choice(GIVEN)}"
        birth = f"{rng.randint(1930, 2020)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
        patients.append((base + n + 1, f"FILL{n:07d}", "FILL", name, birth, rng.choice("MF")))
    db.insert("patients", PATIENT_COLUMNS, patients)

    per_study = max(1, args.instances // args.studies)
    study_base = db.scalar("SELECT COALESCE(MAX(id), 0) FROM studies")
    series_id = db.scalar("SELECT COALESCE(MAX(id), 0) FROM series")
    studies, series, instances = [], [], []
    now_ms = int(time.time() * 1000)
    for s in range(args.studies):
        study_id = study_base + s + 1
        patient = patients[rng.randrange(len(patients))][0]
        date = f"{rng.randint(2014, 2025)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
        modality, sop_class = rng.choice(MODALITIES)
        studies.append((study_id, patient, f"{root}.{s}", date, f"{rng.randint(7, 19):02d}{rng.randint(0, 59):02d}00",
                        f"ACC{s:08d}", str(s), f"{modality} EXAM", "HOUSE^GREGORY"))
        n_series = rng.randint(1, 3)
        for k in range(n_series):
            series_id += 1
            series.append((series_id, study_id, f"{root}.{s}.{k}", modality, k + 1, "AXIAL", ""))
            count = per_study // n_series + (1 if k < per_study % n_series else 0)
            for i in range(count):
                uid = f"{root}.{s}.{k}.{i}"
                instances.append((series_id, uid, sop_class, i + 1, "", "1.2.840.10008.1.2.1", "online",
                                  f"synthetic/no-file/{s}/{k}/{i}", 0, 524_288, 0, now_ms, "FILL"))
        if len(instances) >= 100_000:
            flush(db, studies, series, instances)
    flush(db, studies, series, instances)
    db.finish()
    total = db.scalar("SELECT COUNT(*) FROM instances")
    print(f"filled {args.patients} patients, {args.studies} studies; locator now holds {total} instances "
          f"({time.time() - started:.1f} s)")


def flush(db, studies, series, instances):
    db.insert("studies", STUDY_COLUMNS, studies)
    db.insert("series", SERIES_COLUMNS, series)
    db.insert("instances", INSTANCE_COLUMNS, instances)
    studies.clear()
    series.clear()
    instances.clear()


if __name__ == "__main__":
    sys.exit(main())
