// Reads a SequenceFile with Hadoop's own SequenceFile.Reader and prints, per file,
// `KEY <key> <file length> <CRC-32C of the file, hex>`, then `META <key>=<value>` lines;
// with OUTDIR, also writes each file to OUTDIR/<key>. A record with the empty key continues
// the file of the record before it (S-DICOM splits files of 2 GiB or more that way), so a
// file is the values of its records concatenated. Used by Strata's tests to show that
// Hadoop reads S-DICOM containers unmodified.
//
//   java -cp CONF:JARS/* SeqRead hdfs://127.0.0.1:PORT/path/to/container [OUTDIR]
import java.util.Map;
import java.util.zip.CRC32C;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.io.BytesWritable;
import org.apache.hadoop.io.SequenceFile;
import org.apache.hadoop.io.Text;

public class SeqRead {
    public static void main(String[] args) throws Exception {
        Configuration conf = new Configuration();
        // The small jar set has no Avro: only Writable serialization.
        conf.set("io.serializations", "org.apache.hadoop.io.serializer.WritableSerialization");
        try (SequenceFile.Reader reader =
                new SequenceFile.Reader(conf, SequenceFile.Reader.file(new Path(args[0])))) {
            Text key = new Text();
            BytesWritable value = new BytesWritable();
            String file = null;
            long length = 0;
            CRC32C crc = new CRC32C();
            java.io.OutputStream out = null;
            while (reader.next(key, value)) {
                if (key.getLength() > 0) {
                    if (file != null) {
                        System.out.printf("KEY %s %d %08x%n", file, length, crc.getValue());
                    }
                    if (out != null) {
                        out.close();
                        out = null;
                    }
                    file = key.toString();
                    length = 0;
                    crc = new CRC32C();
                    out = args.length > 1
                            ? java.nio.file.Files.newOutputStream(java.nio.file.Paths.get(args[1], file))
                            : null;
                } else if (file == null) {
                    throw new IllegalStateException("a continuation record opens the container");
                }
                crc.update(value.getBytes(), 0, value.getLength());
                length += value.getLength();
                if (out != null) {
                    out.write(value.getBytes(), 0, value.getLength());
                }
            }
            if (file != null) {
                System.out.printf("KEY %s %d %08x%n", file, length, crc.getValue());
            }
            if (out != null) {
                out.close();
            }
            for (Map.Entry<Text, Text> e : reader.getMetadata().getMetadata().entrySet()) {
                System.out.printf("META %s=%s%n", e.getKey(), e.getValue());
            }
        }
    }
}
