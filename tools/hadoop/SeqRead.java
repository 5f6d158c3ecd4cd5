// Reads a SequenceFile with Hadoop's own SequenceFile.Reader and prints, per record,
// `KEY <key> <value length> <CRC-32C of the value, hex>`, then `META <key>=<value>` lines;
// with OUTDIR, also writes each value to OUTDIR/<key>. Used by Strata's tests to show that
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
            while (reader.next(key, value)) {
                CRC32C crc = new CRC32C();
                crc.update(value.getBytes(), 0, value.getLength());
                System.out.printf("KEY %s %d %08x%n", key, value.getLength(), crc.getValue());
                if (args.length > 1) {
                    java.nio.file.Files.write(java.nio.file.Paths.get(args[1], key.toString()),
                            java.util.Arrays.copyOf(value.getBytes(), value.getLength()));
                }
            }
            for (Map.Entry<Text, Text> e : reader.getMetadata().getMetadata().entrySet()) {
                System.out.printf("META %s=%s%n", e.getKey(), e.getValue());
            }
        }
    }
}
